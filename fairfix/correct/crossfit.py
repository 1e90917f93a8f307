"""The guard's evidence: cross-fitted folds, or a plain split (DESIGN.md section 1, step 5).

Cross-fitting gives the guard every row: the rows are cut into ``folds`` folds stratified by
(group, class), an adapter trained on the other folds is judged on each fold, and the
held-out classes are pooled, so every candidate setting is judged once on every row by an
adapter that never trained on it.  A plain split (``val_fraction``) is one such unit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fairfix.correct.checkpoint import load_unit, save_unit
from fairfix.correct.config import CorrectConfig


def split_rows(n: int, fraction: float, strata: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, held-out) row ids: ``fraction`` of each stratum is held out."""
    rng = np.random.default_rng(seed)
    val = []
    for s in np.unique(strata):
        ids = rng.permutation(np.flatnonzero(strata == s))
        val.append(ids[: int(round(len(ids) * fraction))])
    v = np.sort(np.concatenate(val)) if val else np.zeros(0, int)
    t = np.setdiff1d(np.arange(n), v)
    return t, v


def fold_rows(strata: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train, held-out) pairs; every row is held out once, each stratum dealt evenly."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(strata), np.int64)
    offset = 0
    for s in np.unique(strata):
        ids = rng.permutation(np.flatnonzero(strata == s))
        fold_of[ids] = (np.arange(len(ids)) + offset) % folds  # continue the deal: small strata spread out
        offset += len(ids)
    everything = np.arange(len(strata))
    return [(everything[fold_of != k], everything[fold_of == k]) for k in range(folds)]


def units(strata: np.ndarray, config: CorrectConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, held-out) units of the guard's evidence: the folds, or the plain split."""
    if config.val_fraction is not None:
        return [split_rows(len(strata), config.val_fraction, strata, config.seed)]
    return fold_rows(strata, config.folds, config.seed)


def pooled(
    plans: list[str],
    parts: list[tuple[np.ndarray, np.ndarray]],
    n_rows: int,
    shape: tuple[int, int],
    judge: Callable[[str, int, np.ndarray, np.ndarray], tuple[np.ndarray, dict[str, list[float]]]],
    *,
    checkpoint: Path | None,
    key: dict[str, str],
    config: CorrectConfig,
    skipped: Callable[[], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, list[dict[str, list[float]]]]]:
    """Held-out classes of every row at every candidate, per plan: ``{plan: (budgets, strengths, n_rows)}``.

    ``judge(plan, unit, train ids, held-out ids)`` trains one adapter and returns the classes
    of its held-out rows ``(budgets, strengths, held-out)`` and its loss history.  A unit found
    complete in ``checkpoint`` (already checked against the run's key) is read, not redone
    (``skipped()`` is called for it).
    Rows held out by no unit (a plain split's training rows) stay -1.
    """
    adapted = {p: np.full((*shape, n_rows), -1, np.int64) for p in plans}
    histories: dict[str, list[dict[str, list[float]]]] = {p: [] for p in plans}
    for plan in plans:
        for u, (train, held) in enumerate(parts):
            name = f"{plan}_{u}"
            done: dict[str, Any] | None = load_unit(checkpoint, name) if checkpoint is not None else None
            if done is None:
                classes, history = judge(plan, u, train, held)
                if checkpoint is not None:
                    save_unit(checkpoint, name, classes, history, key=key, config=config)
            else:
                classes, history = done["adapted"], done["history"]
                if skipped is not None:
                    skipped()
            adapted[plan][..., held] = classes
            histories[plan].append(history)
    return adapted, histories
