"""Audit and compare documents built from small synthetic data, for the HTML report tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import fairfix
from fairfix.report.compare import build_compare

# Group names that need escaping in HTML ("<b>&co") and would be TeX to matplotlib ("$x$").
GROUPS = ("north", "<b>&co", "$x$ 'q\"")


def frame(flip_every: dict[str, int]) -> pd.DataFrame:
    """40 rows per group, half of them positive; every k-th prediction of a group is wrong."""
    rows = []
    for g, k in flip_every.items():
        for i in range(40):
            y = i % 2
            rows.append({"g": g, "y": y, "p": 1 - y if i % k == 0 else y})
    return pd.DataFrame(rows)


def audit_dict(flip_every: dict[str, int], **kwargs: Any) -> dict[str, Any]:
    df = frame(flip_every)
    return fairfix.audit(df, label="y", group=["g"], pred="p", **kwargs).to_dict()


SWEEP = [
    {"epoch": e, "strength": s, "tau": t, "activation_rate": 1 - t,
     "accuracy": 0.80 + 0.01 * e - 0.02 * t * s, "worst_group_accuracy": 0.6 + 0.05 * s * (1 - t),
     "equalized_odds_difference": 0.1, "passes_guard": True}
    for e in (1, 2) for s in (0.5, 1.0) for t in (0.3, 0.5, 0.7)
]


@pytest.fixture(scope="session")
def audit_doc() -> dict[str, Any]:
    return audit_dict({"north": 10, "<b>&co": 3, "$x$ 'q\"": 5}, bootstrap=50, seed=1,
                      fail_on=["equalized_odds_difference>0.1"])


@pytest.fixture(scope="session")
def compare_doc() -> dict[str, Any]:
    before = audit_dict({"north": 10, "<b>&co": 3, "$x$ 'q\"": 5}, bootstrap=0)
    after = audit_dict({"north": 10, "<b>&co": 8, "$x$ 'q\"": 6}, bootstrap=0)
    chosen = SWEEP[3]
    return build_compare(
        before, after, fail_on=["delta.worst_group_accuracy<0", "after.accuracy<0.99"],
        detector={"tpr": 0.875, "fpr": 0.0625, "activation_rate": 0.3125,
                  "activation_rate_by_group": {"north": 0.05, "<b>&co": 0.8, "$x$ 'q\"": 0.1},
                  "minority": ["<b>&co"], "mode": "full"},
        tau=chosen["tau"],
        extra={"evaluated_on": "validation split", "adapter_enabled": True,
               "guard": {"max_accuracy_drop": 0.01, "floor": 0.79, "reason": None},
               "chosen": chosen, "base_validation": {"accuracy": 0.8, "worst_group_accuracy": 0.55},
               "sweep": SWEEP})


@pytest.fixture()
def files(tmp_path: Path, audit_doc: dict[str, Any],
          compare_doc: dict[str, Any]) -> dict[str, Path]:
    """audit.json, compare.json and a bundle-like directory holding compare.json."""
    audit = tmp_path / "audit.json"
    audit.write_text(json.dumps(audit_doc))
    compare = tmp_path / "compare.json"
    compare.write_text(json.dumps(compare_doc))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "compare.json").write_text(json.dumps(compare_doc))
    return {"audit": audit, "compare": compare, "bundle": bundle}
