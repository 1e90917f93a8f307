"""A small table for the CLI's reliability tests: two numeric features, a group that shifts the label."""

from __future__ import annotations

import numpy as np
import pandas as pd


def small_frame(n: int, seed: int) -> pd.DataFrame:
    """``x0``, ``x1``, group ``g`` (a / b, about 35% b) and a 0/1 label ``y`` that b shifts up."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    g = np.where(rng.random(n) < 0.35, "b", "a")
    y = ((x[:, 0] + 0.6 * (g == "b") + rng.normal(scale=0.5, size=n)) > 0).astype(int)
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "g": g, "y": y})
