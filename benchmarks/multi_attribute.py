#!/usr/bin/env python
"""Progressive correction of two sensitive attributes (``fairfix correct --group A --group B``).

Adult by sex then race, COMPAS by race then sex (the paper's Table 2 corrects race, then
gender): per seed, an ERM MLP trained on the rows ``correct_many`` trains on (its validation
split held out, as the guard needs), then the progressive correction (one detector and one
adapter per attribute, full labels), and for reference the single-attribute correction of the
first attribute alone.  Both attributes are removed from the model's inputs.  Figures on the
test split, nothing chosen on it: accuracy, worst-group accuracy (WGA, min over (group, label)
cells) per attribute and over their intersection, before and after.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/multi_attribute.py --seeds 5 --write-results

``--quick``: the subsamples and epochs of the other benchmarks' smoke runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import adult_frames, blank  # noqa: E402
from _results import write_section  # noqa: E402

SECTION = "## Several attributes: progressive correction (benchmarks/multi_attribute.py)"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COMPAS_RACES = ("African-American", "Caucasian")
COMPAS_FEATURES = ["age", "juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count",
                   "days_b_screening_arrest", "age_cat", "c_charge_degree", "c_charge_desc"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tasks(quick: bool, data_dir: Path, names: list[str]) -> list[dict[str, Any]]:
    """The named tasks, read only when asked for: Adult (sex, race) on its official splits (embedded);
    COMPAS (race, sex) with a stratified 20% test split (from the shared data folder)."""
    import pandas as pd

    out = []
    if "Adult" in names:
        train, test, _ = adult_frames(quick)
        out.append({"name": "Adult", "dev": train, "test": test, "label": "income", "groups": ["sex", "race"],
                    "features": [c for c in train.columns if c not in ("income", "sex", "race", "fnlwgt")],
                    "val_fraction": 0.2})
    if "COMPAS" in names:
        raw = pd.read_csv(data_dir / "compas-two-years.csv.gz")
        df = raw[raw["race"].isin(COMPAS_RACES)].reset_index(drop=True)
        df = df[[*COMPAS_FEATURES, "race", "sex", "two_year_recid"]]
        if quick:
            df = df.sample(3000, random_state=0).reset_index(drop=True)
        out.append({"name": "COMPAS", "frame": df, "label": "two_year_recid", "groups": ["race", "sex"],
                    "features": COMPAS_FEATURES, "val_fraction": 0.25})
    return out


def seed_frames(task: dict[str, Any], seed: int) -> tuple[Any, Any]:
    """(dev, test) of one seed: Adult's official splits; COMPAS a stratified (label x race x sex) 80/20."""
    if "frame" not in task:
        return task["dev"], task["test"]
    df = task["frame"]
    rng = np.random.default_rng(10_000 + seed)
    keys = df[[task["label"], *task["groups"]]].astype(str).agg("|".join, axis=1).to_numpy()
    hold = np.sort(np.concatenate([rng.permutation(np.flatnonzero(keys == k))[: int(round((keys == k).sum() * 0.2))]
                                   for k in np.unique(keys)]))
    rest = np.setdiff1d(np.arange(len(df)), hold)
    return df.iloc[rest].reset_index(drop=True), df.iloc[hold].reset_index(drop=True)


def summaries(frame: Any, label: str, groups: list[str], model: Any) -> dict[str, dict[str, float]]:
    """Accuracy and WGA per attribute and over the intersection ("x")."""
    import fairfix

    out = {}
    for key, cols in [*((g, [g]) for g in groups), ("x", groups)]:
        s = fairfix.audit(frame, label=label, group=cols, model=model, bootstrap=0).summary
        out[key] = {"accuracy": float(s["accuracy"]), "worst_group_accuracy": float(s["worst_group_accuracy"])}
    return out


def run_seed(task: dict[str, Any], seed: int, quick: bool) -> dict[str, Any]:
    from fairfix.correct.crossfit import split_rows as _split
    from fairfix.correct.fairnet import CorrectConfig
    from fairfix.correct.progressive import correct_many
    from fairfix.correct.run import correct
    from fairfix.data.groups import group_values
    from fairfix.data.labels import encode_labels
    from fairfix.detect.fit import DetectorConfig
    from fairfix.models.tabular import TrainConfig, label_vocabulary, train_tabular

    label, groups = task["label"], task["groups"]
    dev, test = seed_frames(task, seed)
    classes, _ = label_vocabulary(dev[label])
    y = encode_labels(dev[label], classes)
    gv, _ = group_values(dev, groups[0])
    strata = np.array([f"{v}|{g}" for v, g in zip(y, gv, strict=True)])
    tr, _ = _split(len(dev), task["val_fraction"], strata, seed)  # the split correct and correct_many draw
    t0 = time.perf_counter()
    model, _ = train_tabular(dev.iloc[tr].reset_index(drop=True), label=label, features=task["features"],
                             config=TrainConfig(seed=seed, epochs=3 if quick else 30))
    erm_s = time.perf_counter() - t0
    # the guard cross-fits on dev (the product's default); the base never saw the rows of the split above
    ccfg = {"seed": seed, **({"steps": 50, "folds": 2} if quick else {})}
    dcfg = {"seed": seed, **({"epochs": 8} if quick else {})}
    out: dict[str, Any] = {"dataset": task["name"], "seed": seed, "erm_seconds": erm_s,
                           "ERM": summaries(test, label, groups, model)}
    t0 = time.perf_counter()
    single, _ = correct(dev, model, label=label, group=groups[0], config=CorrectConfig(**ccfg),
                        detector_config=DetectorConfig(**dcfg), eval_data=test)
    out["single_seconds"] = time.perf_counter() - t0
    out[f"fairfix ({groups[0]} only)"] = summaries(test, label, groups, single)
    t0 = time.perf_counter()
    multi, res = correct_many(dev, model, label=label, groups=groups, config=CorrectConfig(**ccfg),
                              detector_configs=[DetectorConfig(**dcfg)], eval_data=test)
    out["multi_seconds"] = time.perf_counter() - t0
    out[f"fairfix ({' then '.join(groups)})"] = summaries(test, label, groups, multi)
    # the second attribute's labels scarce (10% of the rows) or absent (detector without labels)
    for regime, frame, mode in ((f"{groups[1]} 10% labels", blank(dev, groups[1], 0.10, seed), "partial"),
                                (f"{groups[1]} no labels", dev, "none")):
        t0 = time.perf_counter()
        scarce, _ = correct_many(frame, model, label=label, groups=groups, config=CorrectConfig(**ccfg),
                                 detector_configs=[DetectorConfig(**dcfg), DetectorConfig(**dcfg, mode=mode)],
                                 eval_data=test)
        out[f"fairfix ({' then '.join(groups)}; {regime})"] = summaries(test, label, groups, scarce)
        out[f"{regime} seconds"] = time.perf_counter() - t0
        out[f"{regime} enabled"] = [a.enabled for a in scarce.attributes]
    out["attributes"] = [{"group": a["group"], "enabled": a["adapter_enabled"], "gate": a["gate"], "tau": a["tau"],
                          "minority": a["detector"]["minority"], "tpr": a["detector"]["tpr"],
                          "fpr": a["detector"]["fpr"], "activation_rate": a["detector"]["activation_rate"]}
                         for a in res["compare"]["attributes"]]
    log(f"  {task['name']} seed {seed}: " + "; ".join(
        f"{m}: acc {v['x']['accuracy']:.4f} WGA x {v['x']['worst_group_accuracy']:.4f}"
        for m, v in out.items() if isinstance(v, dict) and "x" in v)
        + f" ({erm_s:.0f} + {out['single_seconds']:.0f} + {out['multi_seconds']:.0f} s); attributes "
        + ", ".join(f"{a['group']} {'on' if a['enabled'] else 'off'}" for a in out["attributes"]))
    return out


def fmt(values: list[float]) -> str:
    m = 100 * statistics.mean(values)
    s = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.1f} ± {s:.1f}"


def table(runs: list[dict[str, Any]], groups: list[str]) -> str:
    methods = [k for k, v in runs[0].items() if isinstance(v, dict) and "x" in v]
    cols = [*groups, "x"]
    head = "| method | accuracy | " + " | ".join(f"WGA {c if c != 'x' else ' x '.join(groups)}" for c in cols) + " |"
    lines = [head, "|" + "---|" * (2 + len(cols))]
    for m in methods:
        lines.append(f"| {m} | {fmt([r[m]['x']['accuracy'] for r in runs])} | "
                     + " | ".join(fmt([r[m][c]['worst_group_accuracy'] for r in runs]) for c in cols) + " |")
    multi = f"fairfix ({' then '.join(groups)})"
    base = "ERM"
    no_loss = sum(r[multi]["x"]["accuracy"] >= r[base]["x"]["accuracy"] - 0.003 for r in runs)
    on = [sum(a["enabled"] for a in r["attributes"]) for r in runs]
    det = "; ".join(
        f"{g}: TPR {statistics.mean([r['attributes'][i]['tpr'] or 0 for r in runs]):.2f} / FPR "
        f"{statistics.mean([r['attributes'][i]['fpr'] or 0 for r in runs]):.2f}, adapter on in "
        f"{sum(r['attributes'][i]['enabled'] for r in runs)}/{len(runs)} seeds"
        for i, g in enumerate(groups))
    lines += ["", f"{multi}: accuracy within 0.3 points of ERM (or above) in {no_loss}/{len(runs)} seeds; "
              f"adapters on per seed: {on}. Detectors (test): {det}."]
    scarce = [k[: -len(" enabled")] for k in runs[0] if k.endswith(" enabled")]
    if scarce:
        lines[-1] += " Second attribute's labels scarce or absent: " + "; ".join(
            f"{r}: {groups[1]}'s adapter on in {sum(run[f'{r} enabled'][1] for run in runs)}/{len(runs)} seeds"
            for r in scarce) + "."
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="subsamples and few epochs (smoke run)")
    ap.add_argument("--datasets", default="Adult,COMPAS")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--json", type=Path, help="write every run's figures here")
    ap.add_argument("--from-json", type=Path, help="render figures from an earlier --json instead of running")
    ap.add_argument("--write-results", action="store_true", help="write the section of docs/results.md")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    t_all = time.perf_counter()
    if args.from_json:
        runs_by = json.loads(args.from_json.read_text())
    else:
        runs_by = {}
        for task in tasks(args.quick, args.data_dir, args.datasets.split(",")):
            runs_by[task["name"]] = {"groups": task["groups"],
                                     "runs": [run_seed(task, s, args.quick) for s in range(args.seeds)]}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(runs_by, indent=1))
    parts = [SECTION, "",
             "Test accuracy / worst-group accuracy (WGA, min over (group, label) cells) in %, mean ± sd over "
             f"{len(next(iter(runs_by.values()))['runs'])} seeds, {'quick settings' if args.quick else 'full data'}; "
             "both attributes removed from the inputs; an ERM MLP (fairfix train's defaults) trained on the rows the "
             "correction trains on; fairfix with full labels for both attributes, the guard's defaults "
             "(no accuracy loss, 1 SE); nothing chosen on test. `A only`: the single-attribute correction of the "
             "first attribute; `A then B`: progressive correction (one detector and adapter per attribute, the "
             "second fitted on the model corrected for the first); `B 10% labels` / `B no labels`: the same with the "
             "second attribute labelled on 10% of the training rows (detector mode partial) or not at all (mode "
             "none: pseudo-labels; the guard still reads the validation rows' labels). Command: "
             "`OMP_NUM_THREADS=1 python benchmarks/multi_attribute.py --seeds 5"
             f"{' --quick' if args.quick else ''} --write-results`.", ""]
    for name, block in runs_by.items():
        parts += [f"### {name} ({' then '.join(block['groups'])})", "", table(block["runs"], block["groups"]), ""]
    parts += ["How to read it: the guard passes a setting on validation only; a test accuracy more than 0.3 "
              "points under ERM (the count above) is the validation-to-test noise of that choice, not a setting "
              "that lost accuracy on validation. On these near-optimal tabular MLPs the gains are a few points of "
              "worst-group accuracy with seed-to-seed spreads of the same size: read them as small.", "",
              "Coloured digits: not run with a second attribute. The construction has one spurious "
              "attribute (colour); a second one would have to be invented (a second cue in the blue channel), "
              "which measures the construction more than the method.", ""]
    text = "\n".join(parts)
    print(text)
    log(f"total {time.perf_counter() - t_all:.0f} s")
    if args.write_results:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
