"""What the correction corrects, and how the guard judges a setting.

:func:`correction_plan` picks the groups the adapter corrects and each class's reference
group from the base model's cells on the guard's rows; :func:`guard_metrics` and
:func:`accuracy_change` are the figures the no-loss guard reads (DESIGN.md section 1, step 5;
the guard itself is :mod:`fairfix.correct.select`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    pass


#: Share of anchors with an open hinge under which the contrastive term has nothing to act on.
HINGE_CLOSED = 0.01
#: Detector quality (TPR - FPR on its held-out rows) under which it is at chance.
DETECTOR_CHANCE = 0.05


def correction_plan(m_val: np.ndarray, y_val: np.ndarray, pred_val: np.ndarray, n_classes: int,
                    groups: str, count_train: np.ndarray) -> dict[str, Any]:
    """Which groups the adapter corrects, and the reference group of each class.

    ``m_val``: 1 for the minority (the detector's group), 0 for the rest, -1 unknown, on
    the validation rows; ``pred_val`` the base model's class predictions there;
    ``count_train (2, C)`` training rows per (group, class) cell.

    The reference prototype of class y is the cell (group, y) the base model serves best
    on validation (the paper's majority prototype where the majority is the better served;
    a tie goes to the larger cell).  The rest of the rows are corrected too when they hold
    an under-served cell: a class they are served worse on than the minority is
    (``groups="auto"``); ``groups="minority"`` corrects the minority alone, as the paper.
    """
    acc = np.full((2, n_classes), np.nan)
    for m in (0, 1):
        for c in range(n_classes):
            sel = (m_val == m) & (y_val == c)
            if sel.any():
                acc[m, c] = float((pred_val[sel] == c).mean())
    reference = []
    for c in range(n_classes):
        a = np.where(np.isnan(acc[:, c]), -1.0, acc[:, c])
        if count_train[0, c] and count_train[1, c] and a[0] != a[1]:
            reference.append(int(a[1] > a[0]))  # the better served cell
        else:  # an empty training cell, or a tie: the larger cell
            reference.append(int(count_train[1, c] > count_train[0, c]))
    rest_underserved = bool(np.any(acc[0] < acc[1]))  # NaN compares False
    return {"groups": "all" if groups == "auto" and rest_underserved else "minority",
            "reference": reference, "rest_underserved": rest_underserved,
            "cell_accuracy_validation": [[None if np.isnan(v) else float(v) for v in row] for row in acc]}


def guard_metrics(pred: np.ndarray, y: np.ndarray, g: np.ndarray, n_classes: int, positive: int | None
                  ) -> dict[str, float]:
    """Accuracy, worst-group accuracy and equalized-odds difference of class-index predictions.

    ``g`` holds group codes (-1: unknown group, counted in accuracy only).
    """
    from fairfix.metrics import rates

    acc = float((pred == y).mean())
    known = g >= 0
    n_groups = int(g.max()) + 1 if known.any() else 0
    if n_groups == 0:
        return {"accuracy": acc, "worst_group_accuracy": float("nan"), "equalized_odds_difference": float("nan")}
    key = (g[known] * n_classes + y[known]) * n_classes + pred[known]
    counts = np.bincount(key, minlength=n_groups * n_classes * n_classes).reshape(n_groups, n_classes, n_classes)
    label_idx = [k for k in range(n_classes) if counts[:, k, :].sum() > 0]
    targets = [positive] if positive is not None else label_idx
    s = rates.summary_arrays(counts, targets, label_idx)
    return {"accuracy": acc, "worst_group_accuracy": float(s["worst_group_accuracy"]),
            "equalized_odds_difference": float(s["equalized_odds_difference"])}


def accuracy_change(pred: np.ndarray, base_pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Accuracy gain over the base on the same rows and its standard error.

    Per row ``d = [pred == y] - [base_pred == y]`` (-1, 0 or 1); the gain is ``mean(d)``
    and its standard error ``std(d, ddof=1) / sqrt(n)``: paired, so rows whose prediction
    did not change add no noise, and a setting that changes few rows is judged on them.
    """
    d = (pred == y).astype(np.float64) - (base_pred == y)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return float(d.mean()), se
