"""Progress in order, labelled, and an interrupted `correct` that says how to resume (issue 20, "Also")."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fairfix.cli import _output, app
from tests.cli.frames import small_frame

runner = CliRunner()


def test_a_stage_line_comes_before_the_note_that_follows_its_stage(capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAIRFIX_NO_PROGRESS", raising=False)
    with _output.StageProgress() as progress:
        assert progress.mode == "lines"  # stderr is not a terminal here
        progress("train", 16, 30)
        progress("train", 30, 30)
        _output.note("train: done in 4.0 s")
        progress("detector", 2, 2)
        _output.warn("something about the detector")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("fairfix: train: 30/30")
    assert lines[1] == "fairfix: train: done in 4.0 s"
    assert lines[2].startswith("fairfix: detector: 2/2")
    assert lines[3] == "fairfix: warning: something about the detector"
    assert len(lines) == 4  # each stage once


def test_stage_progress_on_a_terminal_shows_no_unlabelled_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_output, "progress_mode", lambda quiet=False: "rich")
    with _output.StageProgress() as progress:
        assert progress._progress.tasks == []  # no "0/?" spinner without a label for the whole run
        progress("adapter", 1, 8)
        assert [t.description for t in progress._progress.tasks] == ["adapter"]


def _frame(n: int = 200) -> pd.DataFrame:
    return small_frame(n, seed=4)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    _frame().to_csv(root / "d.csv", index=False)
    res = runner.invoke(app, ["train", str(root / "d.csv"), "--label", "y", "--features", "x0,x1", "--epochs", "1",
                              "--hidden", "16,8", "--out", str(root / "m"), "--quiet"])
    assert res.exit_code == 0, res.output
    return root


def _correct(made: Path, out: Path) -> list[str]:
    return ["correct", str(made / "d.csv"), "--model", str(made / "m"), "--label", "y", "--group", "g",
            "--epochs", "1", "--out", str(out), "--quiet", "--format", "json"]


def test_a_rerun_after_an_interruption_mentions_the_checkpoint_and_resume(made: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / ".b.checkpoint"
    (checkpoint / "minority").mkdir(parents=True)  # what Ctrl-C leaves beside --out
    res = runner.invoke(app, _correct(made, tmp_path / "b"))
    assert res.exit_code == 0, res.output
    assert f"found the checkpoint of an interrupted run at {checkpoint}" in res.stderr
    assert "--resume" in res.stderr
    assert not checkpoint.exists()


def test_an_interrupted_correct_says_how_to_resume(made: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args, checkpoint: Path, **kwargs):  # noqa: ANN002, ANN003, ANN202
        (checkpoint / "minority").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr("fairfix.correct.run.correct", interrupted)
    res = runner.invoke(app, _correct(made, tmp_path / "b"))
    assert res.exit_code == 130, res.output
    assert f"completed folds are kept in {tmp_path / '.b.checkpoint'}: rerun with --resume" in res.stderr
    assert res.stderr.strip().splitlines()[-1] == "fairfix: error: interrupted"


def test_adapter_progress_counts_steps_one_line_per_stage(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The correction counts optimizer steps: every fold and plan together, then the shipped adapter."""
    monkeypatch.delenv("FAIRFIX_NO_PROGRESS", raising=False)
    with _output.StageProgress() as progress:
        for k in (50, 100, 150, 200):
            progress("adapter", k, 200, {"loss": 0.1})
        progress("adapter (shipped)", 50, 50, {"loss": 0.1})
        progress("compare", 1, 1)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" loss=")[0].split(" (")[0] for line in lines] == [
        "fairfix: adapter: 200/200 steps", "fairfix: adapter", "fairfix: compare: 1/1"]
    assert lines[1].startswith("fairfix: adapter (shipped): 50/50 steps loss=")


