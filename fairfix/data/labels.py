"""Label encoding: a label column's values as class indices of a model's (or a vocabulary's) classes.

Shared by training (``fairfix.models``), the detector (``fairfix.detect``), the correction
(``fairfix.correct``) and the recipes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def encode_labels(values: Any, classes: list[Any]) -> np.ndarray:
    """Label values -> class indices (after the same normalisation as the vocabulary)."""
    from fairfix.metrics.counts import normalize_values

    raw = list(dict.fromkeys(values.tolist()))
    norm = dict(zip(raw, normalize_values(raw), strict=True))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[norm[v]] for v in values.tolist()], dtype=np.int64)
