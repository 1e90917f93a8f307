"""Empty group cells in `correct` and text in numeric columns: one line naming file, column and value (issue 20,
defects 7 and 8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fairfix.cli import app
from tests.cli.frames import small_frame
from tests.cli.test_audit_cli import assert_one_line_error

runner = CliRunner()
EMPTY_ROWS = [6, 10, 20, 30]  # 0-based: the first empty cell is data row 7 of the file


def _frame(n: int = 300) -> pd.DataFrame:
    return small_frame(n, seed=2)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cells")
    frame = _frame()
    frame.to_csv(root / "d.csv", index=False)
    holes = frame.astype({"g": object})
    holes.loc[EMPTY_ROWS, "g"] = None
    holes.to_csv(root / "holes.csv", index=False)
    text = frame.astype({"x1": object})
    text.loc[4, "x1"] = "abc"
    text.to_csv(root / "text.csv", index=False)
    res = runner.invoke(app, ["train", str(root / "d.csv"), "--label", "y", "--features", "x0,x1", "--epochs", "2",
                              "--hidden", "16,8", "--out", str(root / "m"), "--quiet"])
    assert res.exit_code == 0, res.output
    return root


def _correct(made: Path, data: str, out: Path, *extra: str) -> list[str]:
    return ["correct", data, "--model", str(made / "m"), "--label", "y", "--group", "g", "--epochs", "1",
            "--out", str(out), "--quiet", "--format", "json", *extra]


def test_correct_mode_full_with_empty_group_cells_names_file_count_and_first_row(made: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, _correct(made, str(made / "holes.csv"), tmp_path / "b", "--mode", "full"))
    line = assert_one_line_error(res, f"{made / 'holes.csv'}: group column 'g' has 4 missing value(s)",
                                 "(first at row 7)", "--mode partial")
    assert "--keep-missing-groups" not in line  # correct has no such option
    assert not (tmp_path / "b").exists()


def test_correct_with_empty_group_cells_audits_the_labelled_rows_and_says_how_many(made: Path, tmp_path: Path
                                                                                   ) -> None:
    res = runner.invoke(app, _correct(made, str(made / "d.csv"), tmp_path / "b", "--eval", str(made / "holes.csv")))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["evaluated_on"] == f"{made / 'holes.csv'} (4 row(s) with an empty 'g' cell left out)"
    assert doc["before"]["n"] == doc["after"]["n"] == 300 - len(EMPTY_ROWS)
    res = runner.invoke(app, _correct(made, str(made / "holes.csv"), tmp_path / "b2"))  # auto mode: partial labels
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("command", ["audit", "predict", "detect", "correct"])
def test_text_in_a_numeric_column_names_file_column_and_value(made: Path, tmp_path: Path, command: str) -> None:
    data, model = str(made / "text.csv"), str(made / "m")
    args = {
        "audit": ["audit", data, "--model", model, "--label", "y", "--group", "g"],
        "predict": ["predict", data, "--model", model, "-o", str(tmp_path / "p.csv")],
        "detect": ["detect", data, "--model", model, "--group", "g", "--minority", "b", "--out", str(tmp_path / "d")],
        "correct": _correct(made, data, tmp_path / "b"),
    }[command]
    line = assert_one_line_error(runner.invoke(app, args), f"{data}: column 'x1' holds 'abc', which is not a number")
    assert "#" not in line  # no "In CSV column #3"


def test_text_in_a_score_column_names_file_and_column(made: Path) -> None:
    frame = _frame(20).assign(s=0.5).astype({"s": object})
    frame.loc[3, "s"] = "abc"
    frame.to_csv(made / "scores.csv", index=False)
    res = runner.invoke(app, ["audit", str(made / "scores.csv"), "--score", "s", "--label", "y", "--group", "g"])
    assert_one_line_error(res, str(made / "scores.csv"), "'s'", "abc")


def test_bundle_audits_name_their_eval_file_and_the_card_says_so(made: Path, tmp_path: Path) -> None:
    """Issue 20, defect 10: `settings.source` was `<DataFrame>`; the card claimed `--bootstrap 0`."""
    out = tmp_path / "b"
    res = runner.invoke(app, _correct(made, str(made / "d.csv"), out, "--eval", str(made / "holes.csv")))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["before"]["settings"]["source"] == doc["after"]["settings"]["source"] == str(made / "holes.csv")
    res = runner.invoke(app, _correct(made, str(made / "d.csv"), tmp_path / "b2"))
    assert res.exit_code == 0, res.output
    source = f"out-of-fold predictions on DATA (5 folds) of {made / 'd.csv'}"  # the guard's own rows, named
    assert json.loads(res.stdout)["after"]["settings"]["source"] == source
    res = runner.invoke(app, _correct(made, str(made / "d.csv"), tmp_path / "b3", "--val-fraction", "0.2"))
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["after"]["settings"]["source"] == f"validation split of {made / 'd.csv'}"
    card = tmp_path / "README.md"
    res = runner.invoke(app, ["report", str(out), "--model-card", str(card)])
    assert res.exit_code == 0, res.output
    text = card.read_text()
    assert "<DataFrame>" not in text
    assert "name: holes.csv" in text
    assert "--bootstrap 0" not in text


@pytest.mark.parametrize("command", ["predict", "audit"])
def test_missing_numeric_inputs_are_counted_in_one_warning(made: Path, tmp_path: Path, command: str) -> None:
    """Issue 20, defect 14: the training mean filled them silently."""
    frame = _frame()
    frame.loc[[3, 5, 9], "x1"] = np.nan
    frame.loc[4, "x0"] = np.nan
    frame.to_csv(tmp_path / "nan.csv", index=False)
    for data, expect in ((tmp_path / "nan.csv", True), (made / "d.csv", False)):
        args = (["predict", str(data), "--model", str(made / "m"), "-o", str(tmp_path / "p.csv"), "--force"]
                if command == "predict" else
                ["audit", str(data), "--model", str(made / "m"), "--label", "y", "--group", "g", "--format", "json"])
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        warnings = [line for line in res.stderr.splitlines() if line.startswith("fairfix: warning:")]
        if expect:
            assert len(warnings) == 1, res.stderr
            assert f"{data}: 4 missing numeric input value(s) filled with the training mean" in warnings[0]
            assert "'x0' (1), 'x1' (3)" in warnings[0]
        else:
            assert warnings == [], res.stderr
