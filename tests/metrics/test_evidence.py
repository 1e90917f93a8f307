"""What a number claims: an interval holds its own point estimate, and one group is no evidence of fairness
(issue 20, defects 13 and 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import fairfix
from fairfix.cli import app
from fairfix.metrics import rates

runner = CliRunner()


def _equal_groups(n_groups: int = 6, n: int = 40) -> pd.DataFrame:
    """Groups with exactly the same confusion counts: every gap's point is 0, every resampled gap is above it."""
    rows = []
    for g in range(n_groups):
        for i in range(n):
            y = i % 2
            p = y if i % 5 else 1 - y  # 80% right in every group, alike for both labels
            rows.append({"g": f"g{g}", "h": "x" if g % 2 else "z", "y": y, "p": p})
    return pd.DataFrame(rows)


def test_every_interval_contains_its_point_estimate() -> None:
    report = fairfix.audit(_equal_groups(), label="y", pred="p", group=["g", "h"], bootstrap=500, seed=0)
    assert report.summary["accuracy_gap"] == 0.0
    for metric in rates.SUMMARY_METRICS:
        lo, hi = report.summary_ci[metric]
        point = report.summary[metric]
        assert lo <= point <= hi, (metric, lo, point, hi)
    for g in report.groups:
        for metric, (lo, hi) in g["ci"].items():
            assert lo <= g[metric] <= hi, (g["group"], metric, lo, g[metric], hi)


def test_a_gap_interval_still_spans_the_resampled_gaps() -> None:
    """Widening keeps the upper bound: the gap's interval is [point, percentile high], not collapsed."""
    report = fairfix.audit(_equal_groups(), label="y", pred="p", group="g", bootstrap=500, seed=0)
    lo, hi = report.summary_ci["accuracy_gap"]
    assert lo == 0.0 and hi > 0.1


def _one_group(tmp_path: Path) -> Path:
    frame = _equal_groups(1, 200).assign(g="only")
    frame.to_csv(tmp_path / "one.csv", index=False)
    return tmp_path / "one.csv"


@pytest.mark.parametrize("gate", ["equalized_odds_difference>0.1", "accuracy_gap>0.05",
                                  "demographic_parity_ratio<0.8"])
def test_a_gap_gate_on_one_group_is_insufficient_evidence(tmp_path: Path, gate: str) -> None:
    res = runner.invoke(app, ["audit", str(_one_group(tmp_path)), "--label", "y", "--pred", "p", "--group", "g",
                              "--format", "json", "--fail-on", gate])
    assert res.exit_code == 0, res.output
    (result,) = json.loads(res.stdout)["gates"]
    assert result["tripped"] is False
    assert result["insufficient_evidence"] is True
    assert "1 group(s) only" in result["reasons"][0]
    assert "gate passed without sufficient evidence" in res.stderr and "1 group(s) only" in res.stderr


def test_overall_accuracy_gate_on_one_group_needs_no_groups(tmp_path: Path) -> None:
    res = runner.invoke(app, ["audit", str(_one_group(tmp_path)), "--label", "y", "--pred", "p", "--group", "g",
                              "--format", "json", "--fail-on", "accuracy<0.5"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["gates"][0]["insufficient_evidence"] is False


def test_compare_gate_on_one_group_is_insufficient_evidence(tmp_path: Path) -> None:
    out = tmp_path / "a.json"
    res = runner.invoke(app, ["audit", str(_one_group(tmp_path)), "--label", "y", "--pred", "p", "--group", "g",
                              "--format", "json", "--output", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", str(out), str(out), "--format", "json",
                              "--fail-on", "delta.equalized_odds_difference>0.05"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["gates"][0]["insufficient_evidence"] is True
