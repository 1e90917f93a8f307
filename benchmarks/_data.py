"""Shared by the benchmark scripts: the Adult frames they fit and measure on, and label blanking."""

from __future__ import annotations

from typing import Any

import numpy as np


def adult_frames(quick: bool) -> tuple[Any, Any, list[str]]:
    """(official train split, official test split, feature columns: all but income and sex).

    ``quick``: seeded subsamples of 4,000 / 2,000 rows (smoke runs).
    """
    from fairfix.datasets import load_adult

    train, test = load_adult("train"), load_adult("test")
    if quick:
        train = train.sample(4000, random_state=0).reset_index(drop=True)
        test = test.sample(2000, random_state=0).reset_index(drop=True)
    return train, test, [c for c in train.columns if c not in ("income", "sex")]


def blank(frame: Any, column: str, keep: float, seed: int) -> Any:
    """A copy of ``frame`` with ``column`` set to NaN on all but a ``keep`` share of rows."""
    out = frame.copy()
    rng = np.random.default_rng(1000 + seed)
    hide = rng.permutation(len(out))[: len(out) - max(2, int(round(len(out) * keep)))]
    out[column] = out[column].astype(object)
    out.loc[hide, column] = np.nan
    return out
