"""Peer: Fairlearn's ExponentiatedGradient (EqualizedOdds) on a LogisticRegression over the peers' features."""

from __future__ import annotations

import numpy as np


def exponentiated_gradient(
    x_tr: np.ndarray, y_tr: np.ndarray, g_tr: np.ndarray, x_te: np.ndarray, seed: int, quick: bool
) -> np.ndarray:
    from fairlearn.reductions import EqualizedOdds, ExponentiatedGradient
    from sklearn.linear_model import LogisticRegression

    eg = ExponentiatedGradient(
        LogisticRegression(max_iter=200 if quick else 1000),
        EqualizedOdds(),
        max_iter=10 if quick else 50,
    )
    eg.fit(x_tr.astype(np.float64), y_tr, sensitive_features=g_tr)
    return np.asarray(eg.predict(x_te.astype(np.float64), random_state=seed)).astype(np.int64)
