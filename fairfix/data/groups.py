"""Group extraction: a group column's values per row, normalised as the audit normalises them.

Shared by the detector (``fairfix.detect``), the correction (``fairfix.correct``) and the recipes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def group_values(frame: Any, group: str) -> tuple[np.ndarray, list[Any]]:
    """Normalised group values per row (None where missing) and the distinct values."""
    from fairfix.metrics.counts import _sorted_values, normalize_values

    col = frame[group]
    raw = list(dict.fromkeys(col.dropna().tolist()))
    norm = dict(zip(raw, normalize_values(raw), strict=True))
    vals = np.array([None if _isna(v) else norm[v] for v in col.tolist()], dtype=object)
    distinct = list(_sorted_values(set(norm.values())))
    return vals, distinct


def _isna(v: Any) -> bool:
    """Missing cell: None, NaN, and pandas' NA/NaT (nullable Int64/string/category columns)."""
    import pandas as pd

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return True
    return bool(pd.api.types.is_scalar(v) and pd.isna(v))
