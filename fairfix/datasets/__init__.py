"""Datasets embedded in the package: UCI Adult (CC BY 4.0), for the demo and the tests.

The files are the original UCI ``adult.data`` / ``adult.test`` (gzip-compressed)
and ``adult.names``.  ``load_adult`` returns them cleaned: a header, stripped
values, ``?`` as missing, and the test split's trailing ``.`` removed from the
labels so both splits share one label vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
]
ADULT_LABEL = "income"


def path(name: str) -> Path:
    """Path of an embedded file, e.g. ``path("adult.test.gz")``."""
    p = HERE / name
    if not p.exists():
        raise FileNotFoundError(f"fairfix has no embedded file {name!r}")
    return p


def load_adult(split: str = "train") -> Any:
    """UCI Adult as a pandas DataFrame; ``split`` is ``"train"`` or ``"test"``."""
    import pandas as pd

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    f = path("adult.data.gz" if split == "train" else "adult.test.gz")
    df = pd.read_csv(
        f, header=None, names=ADULT_COLUMNS, skiprows=1 if split == "test" else 0,
        skipinitialspace=True, na_values=["?"], compression="gzip",
    )
    df[ADULT_LABEL] = df[ADULT_LABEL].str.rstrip(".")
    return df
