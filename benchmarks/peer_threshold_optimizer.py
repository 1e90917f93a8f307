"""Peer: Fairlearn's ThresholdOptimizer (equalized odds), prefit on the ERM model's validation scores.

It reads the group at prediction time.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def prefit_mlp(logits: Any) -> Any:
    """A fitted scikit-learn classifier face for the ERM model, on its features matrix."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    class PrefitMLP(ClassifierMixin, BaseEstimator):
        def __init__(self, logits: Any = None):
            self.logits = logits

        def fit(self, x: Any, y: Any) -> Any:
            return self

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            import torch

            return torch.softmax(self.logits(x).double(), -1).numpy().astype(np.float64)

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.predict_proba(x).argmax(1)

    est = PrefitMLP(logits)
    est.classes_ = np.array([0, 1])  # fitted already: check_is_fitted looks for attributes ending in _
    return est


def threshold_optimizer(
    logits: Any,
    x_va: np.ndarray,
    y_va: np.ndarray,
    g_va: np.ndarray,
    x_te: np.ndarray,
    g_te: np.ndarray,
    seed: int,
) -> np.ndarray:
    from fairlearn.postprocessing import ThresholdOptimizer

    to = ThresholdOptimizer(
        estimator=prefit_mlp(logits),
        constraints="equalized_odds",
        prefit=True,
        predict_method="predict_proba",
    )
    to.fit(x_va, y_va, sensitive_features=g_va)
    return np.asarray(to.predict(x_te, sensitive_features=g_te, random_state=seed)).astype(np.int64)
