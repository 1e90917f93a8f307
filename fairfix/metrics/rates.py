"""Metrics from confusion counts (DESIGN.md section 2).

Every function takes a counts array whose last three axes are
``(group, true label, predicted label)``; any leading axes (bootstrap
replicates) are carried through, so point estimates and bootstrap replicates
share one implementation.  Undefined rates are NaN, never 0, and gaps skip them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

GROUP_METRICS_BINARY = (
    "prevalence",
    "selection_rate",
    "accuracy",
    "tpr",
    "fpr",
    "fnr",
    "tnr",
    "ppv",
)
GROUP_METRICS_MULTICLASS = ("accuracy",)
PER_CLASS_METRICS = ("prevalence", "selection_rate", "tpr", "fpr")
SUMMARY_METRICS = (
    "accuracy",
    "worst_group_accuracy",
    "tpr_gap",
    "fpr_gap",
    "accuracy_gap",
    "equalized_odds_difference",
    "equalized_odds_mean",
    "demographic_parity_difference",
    "demographic_parity_ratio",
)
# The metric each summary scalar is built from; used to decide which groups a gate depends on.
SUMMARY_USES_GROUPS = {k: k != "accuracy" for k in SUMMARY_METRICS}


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.asarray(num, dtype=np.float64) / den
    return np.where(np.asarray(den) == 0, np.nan, out)


def one_vs_rest(counts: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Rates of class index ``k`` against the rest, per group: arrays of shape ``counts.shape[:-2]``."""
    n = counts.sum(axis=(-2, -1))
    pos = counts[..., k, :].sum(axis=-1)  # rows whose true label is k
    sel = counts[..., :, k].sum(axis=-1)  # rows predicted as k
    tp = counts[..., k, k]
    fp = sel - tp
    neg = n - pos
    tn = neg - fp
    return {
        "prevalence": _div(pos, n),
        "selection_rate": _div(sel, n),
        "tpr": _div(tp, pos),
        "fpr": _div(fp, neg),
        "fnr": _div(pos - tp, pos),
        "tnr": _div(tn, neg),
        "ppv": _div(tp, sel),
    }


def accuracy(counts: np.ndarray) -> np.ndarray:
    """Share of rows whose prediction equals the label, per group."""
    trace = np.trace(counts, axis1=-2, axis2=-1)
    return _div(trace, counts.sum(axis=(-2, -1)))


def cell_accuracy(counts: np.ndarray) -> np.ndarray:
    """Accuracy per (group, true label) cell: shape ``counts.shape[:-1]``; NaN for empty cells."""
    diag = np.diagonal(counts, axis1=-2, axis2=-1)
    return _div(diag, counts.sum(axis=-1))


def _gap(values: np.ndarray) -> np.ndarray:
    """Max - min over the group axis (last), skipping NaN; NaN when no group has a value."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(values, axis=-1) - np.nanmin(values, axis=-1)


def _ratio(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _div(np.nanmin(values, axis=-1), np.nanmax(values, axis=-1))


def _nan_reduce(fn, values: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(values, axis=axis)


def summary_arrays(
    counts: np.ndarray, target_classes: Sequence[int], label_class_idx: Sequence[int]
) -> dict[str, np.ndarray]:
    """Summary scalars over groups (DESIGN.md section 2) for counts of shape ``(..., G, K, K)``.

    ``target_classes`` are the class indices whose one-vs-rest rates enter the
    gaps: the positive class for a binary task, every label class for multiclass
    (then each gap is the largest over classes).  ``label_class_idx`` are the
    classes that occur as true labels; worst-group accuracy is the minimum over
    their (group, label) cells.
    """
    total = counts.sum(axis=-3)
    out: dict[str, np.ndarray] = {"accuracy": accuracy(total)}
    cells = cell_accuracy(counts)[..., list(label_class_idx)]  # (..., G, L)
    flat = cells.reshape(*cells.shape[:-2], -1)
    out["worst_group_accuracy"] = _nan_reduce(np.nanmin, flat, -1)
    tpr_gaps, fpr_gaps, dp_diffs, dp_ratios = [], [], [], []
    for k in target_classes:
        r = one_vs_rest(counts, k)
        tpr_gaps.append(_gap(r["tpr"]))
        fpr_gaps.append(_gap(r["fpr"]))
        dp_diffs.append(_gap(r["selection_rate"]))
        dp_ratios.append(_ratio(r["selection_rate"]))
    out["tpr_gap"] = _nan_reduce(np.nanmax, np.stack(tpr_gaps, -1), -1)
    out["fpr_gap"] = _nan_reduce(np.nanmax, np.stack(fpr_gaps, -1), -1)
    out["accuracy_gap"] = _gap(accuracy(counts))
    out["equalized_odds_difference"] = np.fmax(out["tpr_gap"], out["fpr_gap"])
    out["equalized_odds_mean"] = (out["tpr_gap"] + out["fpr_gap"]) / 2
    out["demographic_parity_difference"] = _nan_reduce(np.nanmax, np.stack(dp_diffs, -1), -1)
    out["demographic_parity_ratio"] = _nan_reduce(np.nanmin, np.stack(dp_ratios, -1), -1)
    return out


def worst_cell(
    counts: np.ndarray, label_class_idx: Sequence[int]
) -> tuple[int, int] | None:
    """(group index, class index) of the lowest-accuracy (group, label) cell; None if no cell."""
    cells = cell_accuracy(counts)[:, list(label_class_idx)]
    if np.all(np.isnan(cells)):
        return None
    g, j = np.unravel_index(np.nanargmin(cells), cells.shape)
    return int(g), int(label_class_idx[int(j)])


def to_float(x: Any) -> float | None:
    """A Python float, or None for NaN (JSON has no NaN)."""
    v = float(x)
    return None if np.isnan(v) else v
