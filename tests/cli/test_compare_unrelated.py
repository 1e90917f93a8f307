"""`compare` refuses audits of different labels and warns when rows, groups or positive label differ (issue 20,
defect 18)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from fairfix.cli import app
from tests.cli.test_audit_cli import assert_one_line_error

runner = CliRunner()


def _audit(tmp_path: Path, name: str, *, n: int = 200, label: str = "y", groups: tuple[str, ...] = ("a", "b"),
           seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"g": rng.choice(list(groups), n), label: rng.integers(0, 2, n),
                          "p": rng.integers(0, 2, n)})
    frame.to_csv(tmp_path / f"{name}.csv", index=False)
    out = tmp_path / f"{name}.json"
    res = runner.invoke(app, ["audit", str(tmp_path / f"{name}.csv"), "--label", label, "--pred", "p",
                              "--group", "g", "--format", "json", "--output", str(out), "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    return out


def _compare(a: Path, b: Path, *extra: str) -> object:
    return runner.invoke(app, ["compare", str(a), str(b), "--format", "json", *extra])


def test_compare_refuses_audits_of_different_labels(tmp_path: Path) -> None:
    res = _compare(_audit(tmp_path, "a"), _audit(tmp_path, "b", label="passed"))
    assert_one_line_error(res, "different labels", "'y'", "'passed'")


def test_compare_warns_when_the_audits_evaluated_different_rows(tmp_path: Path) -> None:
    a, b = _audit(tmp_path, "a"), _audit(tmp_path, "b", n=150, seed=1)
    res = _compare(a, b)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert any("different rows (200 vs 150 rows" in w for w in doc["warnings"])
    assert "fairfix: warning:" in res.stderr and "different rows" in res.stderr and str(a) in res.stderr


def test_compare_warns_when_the_groups_differ(tmp_path: Path) -> None:
    a = _audit(tmp_path, "a")
    b = _audit(tmp_path, "b", groups=("a", "c"))
    res = _compare(a, b)
    assert res.exit_code == 0, res.output
    line = next(w for w in json.loads(res.stdout)["warnings"] if "different groups" in w)
    assert "only in BEFORE: 'g=b'" in line and "only in AFTER: 'g=c'" in line
    assert "different groups" in res.stderr


def test_compare_of_the_same_rows_has_no_warning(tmp_path: Path) -> None:
    a = _audit(tmp_path, "a")
    res = _compare(a, a)
    assert res.exit_code == 0, res.output
    assert "warnings" not in json.loads(res.stdout)
    assert "warning" not in res.stderr


def test_audit_baseline_of_another_label_is_refused(tmp_path: Path) -> None:
    base = _audit(tmp_path, "a", label="passed")
    _audit(tmp_path, "b")
    res = runner.invoke(app, ["audit", str(tmp_path / "b.csv"), "--label", "y", "--pred", "p", "--group", "g",
                              "--baseline", str(base), "--fail-on", "delta.accuracy<-0.1", "--format", "json"])
    assert_one_line_error(res, f"--baseline {base}", "different labels")
