"""``--fail-on`` gates: parsing, boundaries, and when a pass is not evidence."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import fairfix
from fairfix.errors import UsageError
from fairfix.metrics import Gate, parse_gate
from fairfix.metrics.gates import evaluate
from fairfix.metrics.rates import SUMMARY_METRICS

KNOWN = SUMMARY_METRICS


@pytest.mark.parametrize(
    ("expr", "metric", "op", "threshold"),
    [
        ("equalized_odds_difference>0.1", "equalized_odds_difference", ">", 0.1),
        ("equalized_odds_difference >= 0.1", "equalized_odds_difference", ">=", 0.1),
        ("worst_group_accuracy<0.8", "worst_group_accuracy", "<", 0.8),
        ("  worst_group_accuracy <= .8  ", "worst_group_accuracy", "<=", 0.8),
        ("tpr_gap>1e-1", "tpr_gap", ">", 0.1),
        ("tpr_gap>=2.5E-3", "tpr_gap", ">=", 0.0025),
        ("fpr_gap < 1.5e+0", "fpr_gap", "<", 1.5),
        ("accuracy<=1", "accuracy", "<=", 1.0),
        ("accuracy>1.", "accuracy", ">", 1.0),
        ("demographic_parity_ratio<-0.5", "demographic_parity_ratio", "<", -0.5),
        ("demographic_parity_ratio<+5e-1", "demographic_parity_ratio", "<", 0.5),
    ],
)
def test_parse_gate_accepts_every_operator_and_number_form(
    expr: str, metric: str, op: str, threshold: float
) -> None:
    gate = parse_gate(expr, KNOWN)
    assert gate == Gate(expr.strip(), metric, op, threshold)


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "equalized_odds_difference",
        "equalized_odds_difference>",
        ">0.1",
        "equalized_odds_difference=0.1",
        "equalized_odds_difference==0.1",
        "equalized_odds_difference=>0.1",
        "equalized_odds_difference>>0.1",
        "equalized_odds_difference!=0.1",
        "equalized_odds_difference>abc",
        "equalized_odds_difference>0.1.2",
        "equalized_odds_difference>1e",
        "equalized_odds_difference>nan",
        "equalized_odds_difference>inf",
        "equalized_odds_difference>0.1 and tpr_gap>0.1",
        "0.1<equalized_odds_difference",
    ],
)
def test_parse_gate_rejects_bad_syntax_naming_the_expression(expr: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_gate(expr, KNOWN)
    message = str(info.value)
    assert repr(expr) in message
    assert "> >= < <=" in message
    assert "\n" not in message


@pytest.mark.parametrize("expr", ["eod>0.1", "Accuracy<0.9", "delta.accuracy<0", "tpr>0.1"])
def test_parse_gate_rejects_unknown_metrics_listing_the_known_ones(expr: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_gate(expr, KNOWN)
    message = str(info.value)
    assert repr(expr) in message
    assert "unknown metric" in message
    assert all(k in message for k in KNOWN)


def test_parse_gate_accepts_dotted_metrics_when_known() -> None:
    gate = parse_gate("delta.worst_group_accuracy<0", ["delta.worst_group_accuracy"])
    assert gate.metric == "delta.worst_group_accuracy" and gate.threshold == 0.0


@pytest.mark.parametrize(
    ("op", "value", "tripped"),
    [
        (">", 0.1, False),
        (">=", 0.1, True),
        ("<", 0.1, False),
        ("<=", 0.1, True),
        (">", 0.1000001, True),
        (">=", 0.0999999, False),
        ("<", 0.0999999, True),
        ("<=", 0.1000001, False),
    ],
)
def test_evaluate_trips_exactly_at_the_boundary(op: str, value: float, tripped: bool) -> None:
    gate = parse_gate(f"tpr_gap{op}0.1", KNOWN)
    result = evaluate(gate, {"tpr_gap": value})
    assert result.tripped is tripped
    assert result.value == value
    assert result.insufficient_evidence is False and result.reasons == []


def test_small_group_makes_a_pass_insufficient_evidence() -> None:
    gate = parse_gate("tpr_gap>0.1", KNOWN)
    result = evaluate(gate, {"tpr_gap": 0.05}, small_groups=["sex=Other (n=4)"])
    assert not result.tripped
    assert result.insufficient_evidence
    assert any("sex=Other (n=4)" in r and "--min-group-size" in r for r in result.reasons)
    # A metric that does not depend on groups is not weakened by small groups.
    plain = evaluate(gate, {"tpr_gap": 0.05}, small_groups=["x"], depends_on_groups=False)
    assert not plain.insufficient_evidence


def test_a_tripped_gate_is_never_insufficient_evidence() -> None:
    gate = parse_gate("tpr_gap>0.1", KNOWN)
    result = evaluate(
        gate, {"tpr_gap": 0.3}, intervals={"tpr_gap": (0.05, 0.5)}, small_groups=["g=a (n=1)"]
    )
    assert result.tripped and not result.insufficient_evidence


@pytest.mark.parametrize(
    ("interval", "insufficient"),
    [
        ((0.02, 0.08), False),
        ((0.02, 0.1), True),  # the threshold on the edge counts as inside
        ((0.02, 0.15), True),
        ((0.1, 0.15), True),
        ((0.11, 0.15), False),  # (a value below an interval is odd, but not this gate's concern)
        ((None, None), False),
    ],
)
def test_interval_containing_the_threshold_is_insufficient_evidence(
    interval: tuple[float | None, float | None], insufficient: bool
) -> None:
    gate = parse_gate("equalized_odds_difference>0.1", KNOWN)
    result = evaluate(
        gate, {"equalized_odds_difference": 0.06}, intervals={"equalized_odds_difference": interval}
    )
    assert not result.tripped
    assert result.insufficient_evidence is insufficient
    if insufficient:
        assert "interval" in result.reasons[0] and "0.1" in result.reasons[0]


@pytest.mark.parametrize("value", [math.nan, np.float64("nan"), None])
def test_undefined_value_never_passes_silently(value: float | None) -> None:
    gate = parse_gate("tpr_gap>0.1", KNOWN)
    result = evaluate(gate, {"tpr_gap": value})
    assert not result.tripped
    assert result.insufficient_evidence
    assert result.value is None
    assert "undefined" in result.reasons[0]
    d = result.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["value"] is None and d["insufficient_evidence"] is True


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n_big, n_small = 400, 6
    g = ["big"] * n_big + ["small"] * n_small
    y = np.concatenate([rng.integers(0, 2, n_big), [0, 1, 0, 1, 0, 1]])
    p = np.where(rng.random(len(g)) < 0.8, y, 1 - y)
    return pd.DataFrame({"y": y, "p": p, "g": g})


def test_audit_gates_end_to_end() -> None:
    df = _frame()
    report = fairfix.audit(
        df,
        label="y",
        pred="p",
        group="g",
        bootstrap=0,
        min_group_size=30,
        fail_on=["equalized_odds_difference>1", "accuracy<0", "worst_group_accuracy<1"],
    )
    eod, acc, wga = report.gates
    assert not eod.tripped and eod.insufficient_evidence  # the "small" group has 6 rows
    assert "g=small (n=6)" in eod.reasons[0]
    assert not acc.tripped and not acc.insufficient_evidence  # overall accuracy: no groups
    assert wga.tripped and wga.value == report.summary["worst_group_accuracy"]
    assert report.tripped == [wga]
    gates = json.loads(json.dumps(report.to_dict(), allow_nan=False))["gates"]
    assert [g["expr"] for g in gates] == [
        "equalized_odds_difference>1",
        "accuracy<0",
        "worst_group_accuracy<1",
    ]
    assert [g["insufficient_evidence"] for g in gates] == [True, False, False]
    assert [g["tripped"] for g in gates] == [False, False, True]


def test_audit_gate_uses_bootstrap_interval() -> None:
    df = _frame()
    kw = {"label": "y", "pred": "p", "group": "g", "bootstrap": 200, "seed": 0, "min_group_size": 0}
    lo, hi = fairfix.audit(df, **kw).summary_ci["accuracy"]
    gated = fairfix.audit(df, **kw, fail_on=[f"accuracy<{lo!r}", "accuracy<0.01"])
    assert lo <= gated.summary["accuracy"] <= hi
    on_edge, far = gated.gates
    assert not on_edge.tripped and on_edge.insufficient_evidence
    assert "interval" in on_edge.reasons[0]
    assert not far.tripped and not far.insufficient_evidence


def test_audit_rejects_a_bad_gate_before_reading_data(tmp_path) -> None:
    missing = tmp_path / "does-not-exist.csv"
    with pytest.raises(UsageError, match="tpr_gap >> 1"):
        fairfix.audit(str(missing), label="y", pred="p", group="g", fail_on=["tpr_gap >> 1"])
