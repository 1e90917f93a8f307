"""``fairfix detect`` from the command line (DESIGN.md sections 3 and 4).

Every kind of bad input exits 2 with one line on stderr naming the value or
column (no traceback); ``--format json`` prints ``fairfix.detect/1`` with the
keys of section 4 and no NaN; mode none reports null TPR/FPR with a reason unless
``--eval-group`` gives labeled rows to measure on.  A tiny synthetic table and a
2-epoch tabular model keep every invocation well under a second.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fairfix.cli import app
from fairfix.detect import load_detector
from fairfix.models import load_model
from fairfix.models.tabular import TrainConfig, train_tabular

FEATURES = ["x0", "x1", "x2", "x3"]
DETECT_KEYS = {
    "mode",
    "labeled_rows",
    "minority",
    "layer",
    "tau",
    "tpr",
    "fpr",
    "precision",
    "activation_rate",
    "activation_rate_by_group",
    "sweep",
}
runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """data.csv (x0 carries group grp, b ~30%), columns for the bad-input cases, and a model."""
    d = tmp_path_factory.mktemp("detect_cli")
    rng = np.random.default_rng(0)
    n = 1000
    g = rng.random(n) < 0.3
    x = rng.normal(size=(n, 4))
    x[:, 0] += np.where(g, 5.0, 0.0)
    df = pd.DataFrame({c: x[:, i] for i, c in enumerate(FEATURES)})
    df["grp"] = np.where(g, "b", "a")
    df["y"] = (x[:, 1] + x[:, 2] > 0).astype(int)
    df["const"] = "a"  # one value only
    df["empty"] = np.nan  # every value missing
    df["some"] = df["grp"].where(np.arange(n) % 4 != 0)  # a quarter missing
    df.to_csv(d / "data.csv", index=False)
    cfg = TrainConfig(hidden=[16, 8], epochs=2, seed=0)
    model, info = train_tabular(df, label="y", features=FEATURES, config=cfg)
    model.save(
        d / "model", config={**asdict(cfg), "label": "y", "features": FEATURES}, training=info
    )
    return {"dir": d, "data": d / "data.csv", "model": d / "model"}


def detect(files: dict[str, Path], *args: Any, out: str = "det", force: bool = True) -> Any:
    argv = [
        "detect",
        str(files["data"]),
        "--model",
        str(files["model"]),
        "--out",
        str(files["dir"] / out),
        "--epochs",
        "3",
        *map(str, args),
    ]
    if force:
        argv.append("--force")
    return runner.invoke(app, argv)


def assert_one_line_error(result: Any, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fairfix: error: ")
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--group", "grp", "--minority", "zzz"], ["'zzz'", "'grp'"]),
        (["--group", "const", "--minority", "a"], ["'const'", "one value"]),
        (["--group", "empty", "--mode", "partial", "--minority", "a"], ["'empty'", "missing"]),
        (["--group", "empty", "--minority", "a"], ["'empty'", "missing"]),  # --mode auto
        (
            ["--group", "some", "--mode", "full", "--minority", "a"],
            ["'some'", "250 of 1000", "missing"],
        ),
        (["--group", "nope", "--minority", "a"], ["'nope'", "--group"]),
        (["--group", "grp", "--mode", "sometimes"], ["'sometimes'", "--mode"]),
        (["--group", "grp"], ["--minority", "--label"]),  # no way to choose the minority group
        (
            ["--mode", "none", "--eval-group", "empty", "--minority", "a", "--unsupervised", "lof"],
            ["'empty'", "--eval-group"],
        ),
        (["--mode", "none", "--unsupervised", "errors"], ["--label"]),
    ],
    ids=[
        "minority-absent",
        "one-value",
        "all-missing-partial",
        "all-missing-auto",
        "full-with-missing",
        "group-absent",
        "bad-mode",
        "no-minority",
        "eval-group-all-missing",
        "errors-needs-label",
    ],
)
def test_bad_input_exits_2_with_one_line(files, args, fragments):
    assert_one_line_error(detect(files, *args), *fragments)


def test_existing_out_needs_force(files):
    out = files["dir"] / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = detect(files, "--group", "grp", "--minority", "b", out="exists", force=False)
    assert_one_line_error(result, str(out), "--force")
    assert (out / "keep.txt").read_text() == "mine"  # untouched


def test_json_report_has_the_design_keys_and_no_nan(files):
    report_file = files["dir"] / "report.json"
    result = detect(
        files,
        "--group",
        "grp",
        "--minority",
        "b",
        "--format",
        "json",
        "--output",
        report_file,
        out="det_json",
    )
    assert result.exit_code == 0, (result.stderr, result.exception)

    def no_constants(name: str) -> Any:
        raise AssertionError(f"non-JSON number {name} in the report")

    rep = json.loads(result.stdout, parse_constant=no_constants)
    json.dumps(rep, allow_nan=False)
    assert DETECT_KEYS <= rep.keys()
    assert rep["schema"] == "fairfix.detect/1"
    assert rep["mode"] == "full" and rep["labeled_rows"] == 1000
    assert rep["minority"] == ["b"] and rep["layer"] == "blocks.0" and rep["tau"] == 0.5
    for k in ("tpr", "fpr", "precision", "activation_rate"):
        assert isinstance(rep[k], float) and 0.0 <= rep[k] <= 1.0, k
    assert set(rep["activation_rate_by_group"]) == {"a", "b"}
    assert rep["sweep"] and all(
        {"tau", "tpr", "fpr", "activation_rate"} <= p.keys() for p in rep["sweep"]
    )
    assert json.loads(report_file.read_text()) == rep  # --output holds the same report
    # The detector directory was written and loads against its base model.
    det = load_detector(files["dir"] / "det_json", load_model(files["model"]))
    assert det.report["tpr"] == rep["tpr"]
    assert "wrote" in result.stderr


def test_table_format_prints_the_operating_point(files):
    result = detect(files, "--group", "grp", "--minority", "b", out="det_table")
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert "TPR" in result.stdout and "FPR" in result.stdout and "tau sweep" in result.stdout


def test_partial_mode_is_chosen_when_values_are_missing(files):
    result = detect(
        files, "--group", "some", "--minority", "b", "--format", "json", out="det_partial"
    )
    assert result.exit_code == 0, (result.stderr, result.exception)
    rep = json.loads(result.stdout)
    assert rep["mode"] == "partial" and rep["labeled_rows"] == 750
    assert rep["train_rows"] + rep["heldout_rows"] == 750


def test_mode_none_without_eval_group_reports_null_with_a_reason(files):
    result = detect(
        files, "--mode", "none", "--unsupervised", "lof", "--format", "json", out="det_none"
    )
    assert result.exit_code == 0, (result.stderr, result.exception)
    rep = json.loads(result.stdout)
    assert rep["mode"] == "none" and rep["labeled_rows"] == 0
    assert rep["tpr"] is None and rep["fpr"] is None and rep["precision"] is None
    assert rep["sweep"] == [] and rep["reason"] and "--eval-group" in rep["reason"]
    assert "--eval-group" in result.stderr  # the warning says it too
    json.dumps(rep, allow_nan=False)


def test_mode_none_with_an_all_empty_group_column_is_unmeasured_not_a_crash(files):
    # `--group empty` in mode auto says "use --mode none": doing so must work.
    result = detect(
        files,
        "--group",
        "empty",
        "--mode",
        "none",
        "--unsupervised",
        "lof",
        "--format",
        "json",
        out="det_none_empty",
    )
    assert result.exit_code == 0, (result.stderr, result.exception)
    rep = json.loads(result.stdout)
    assert rep["tpr"] is None and rep["reason"]


def test_mode_none_with_eval_group_is_measured(files):
    result = detect(
        files,
        "--mode",
        "none",
        "--eval-group",
        "grp",
        "--minority",
        "b",
        "--label",
        "y",
        "--unsupervised",
        "combined",
        "--format",
        "json",
        out="det_none_eval",
    )
    assert result.exit_code == 0, (result.stderr, result.exception)
    rep = json.loads(result.stdout)
    assert rep["mode"] == "none" and rep["reason"] is None
    for k in ("tpr", "fpr", "activation_rate"):
        assert isinstance(rep[k], float) and 0.0 <= rep[k] <= 1.0, k
    assert rep["sweep"] and set(rep["activation_rate_by_group"]) == {"a", "b"}
    assert rep["unsupervised"]["method"] == "combined"
    assert "grp" in rep["evaluated_on"]
