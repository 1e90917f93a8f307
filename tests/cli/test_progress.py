"""Progress fits its place: Rich on a terminal, one line per stage in a CI log, nothing with --quiet."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fairfix.cli import _output, app

from .test_audit_cli import BASE, COLUMNS, csv_text, make_rows

runner = CliRunner()
LINE = re.compile(r"^fairfix: auditing: 80 rows \(\d+\.\d s\)$")


@pytest.fixture(scope="module")
def preds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("progress") / "preds.csv"
    p.write_text(csv_text(make_rows(), COLUMNS))
    return p


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAIRFIX_NO_PROGRESS", raising=False)


def test_off_a_terminal_one_plain_line_per_stage(preds: Path) -> None:
    res = runner.invoke(app, ["audit", str(preds), *BASE, "--format", "json"])  # CliRunner: stderr is no TTY
    assert res.exit_code == 0
    progress = [ln for ln in res.stderr.splitlines() if ln.startswith("fairfix: auditing")]
    assert len(progress) == 1 and LINE.match(progress[0]), res.stderr
    assert "\x1b[" not in res.stderr and "\r" not in res.stderr


@pytest.mark.parametrize("how", [["--quiet"], ["-q"], "env"])
def test_quiet_shows_no_progress(preds: Path, how: Any) -> None:
    args = ["audit", str(preds), *BASE, "--format", "json", *([] if how == "env" else how)]
    res = runner.invoke(app, args, env={"FAIRFIX_NO_PROGRESS": "1"} if how == "env" else None)
    assert res.exit_code == 0
    assert "auditing" not in res.stderr
    assert res.stdout.startswith("{")


def test_a_failed_stage_prints_no_progress_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("y,pred,g\n1,1,a\nx\n")
    res = runner.invoke(app, ["audit", str(bad), *BASE])
    assert res.exit_code == 2
    assert len(res.stderr.splitlines()) == 1 and res.stderr.startswith("fairfix: error:")


def test_stage_progress_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with _output.StageProgress() as progress:
        assert progress.mode == "lines"
        for e in (1, 2, 3):
            progress("detector", e, 3, {"loss": 1.0 / e})
        for e in (1, 2):
            progress("adapter", e, 2, {"loss": 0.5, "open": 0.25})
    lines = err.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert re.match(r"^fairfix: detector: 3/3 loss=0\.3333 \(\d+\.\d s\)$", lines[0]), lines
    assert re.match(r"^fairfix: adapter: 2/2 steps loss=0\.5000 open=0\.2500 \(\d+\.\d s\)$", lines[1]), lines


def test_epoch_progress_lines_and_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with _output.EpochProgress("training") as progress:
        progress(1, 2, {"val_accuracy": 0.5})
        progress(2, 2, {"val_accuracy": 0.75})
    with _output.EpochProgress("training", quiet=True) as progress:
        assert progress.mode == "off"
        progress(1, 2, {"val_accuracy": 0.5})
    (line,) = err.getvalue().splitlines()
    assert re.match(r"^fairfix: training: 2/2 epochs val_accuracy=0\.7500 \(\d+\.\d s\)$", line), line


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_rich_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert _output.progress_mode() == "rich"
    assert _output.progress_mode(quiet=True) == "off"
    monkeypatch.setenv("FAIRFIX_NO_PROGRESS", "1")
    assert _output.progress_mode() == "off"
