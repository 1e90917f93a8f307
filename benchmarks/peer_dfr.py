"""Peer: deep feature reweighting (Kirichenko et al. 2023) on the ERM model's head input."""

from __future__ import annotations

from typing import Any

import numpy as np
from fairnet_protocol import metrics


def dfr(
    model: Any,
    f_va: np.ndarray,
    y_va: np.ndarray,
    g_va: np.ndarray,
    f_te: np.ndarray,
    n_groups: int,
    seed: int,
    n_draws: int = 5,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Deep feature reweighting (Kirichenko et al. 2023) on the head input, validation only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    cells = g_va * 2 + y_va
    half_a = np.zeros(len(y_va), bool)
    for c in np.unique(cells):
        ids = rng.permutation(np.flatnonzero(cells == c))
        half_a[ids[: len(ids) // 2]] = True

    def fit(rows: np.ndarray, c_value: float) -> tuple[Any, np.ndarray, float]:
        scaler = StandardScaler().fit(f_va[rows])
        coefs, intercepts = [], []
        cell_rows = [rows[cells[rows] == c] for c in np.unique(cells[rows])]
        m = min(len(r) for r in cell_rows)
        for _ in range(n_draws):  # cell-balanced subsample: every cell down to the smallest
            pick = np.concatenate([rng.choice(r, m, replace=False) for r in cell_rows])
            lr = LogisticRegression(l1_ratio=1.0, C=c_value, solver="liblinear")
            lr.fit(scaler.transform(f_va[pick]), y_va[pick])
            coefs.append(lr.coef_)
            intercepts.append(lr.intercept_)
        return scaler, np.mean(coefs, 0), float(np.mean(intercepts))

    def predict(fitted: tuple[Any, np.ndarray, float], feats: np.ndarray) -> np.ndarray:
        scaler, coef, b = fitted
        return ((scaler.transform(feats) @ coef.T).ravel() + b > 0).astype(np.int64)

    grid = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
    a, b = np.flatnonzero(half_a), np.flatnonzero(~half_a)
    scores = {}
    for c_value in grid:
        pred_b = predict(fit(a, c_value), f_va[b])
        scores[c_value] = metrics(pred_b, y_va[b], g_va[b], n_groups, 1)["worst_group_accuracy"]
    best_c = max(grid, key=lambda c: (scores[c], -grid.index(c)))
    final = fit(np.arange(len(y_va)), best_c)
    return predict(final, f_te), {"C": best_c, "half_wga": scores[best_c]}
