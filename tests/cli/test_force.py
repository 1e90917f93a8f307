"""What --force may replace: regular files and fairfix artifact directories, never an input (issue 11, defect 9)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fairfix.cli import app

runner = CliRunner()


def _frame(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "g": np.where(rng.random(n) < 0.4, "b", "a"),
                         "y": (x[:, 0] > 0).astype(int), "p": (x[:, 1] > 0).astype(int)})


def _exit_2(res, *fragments) -> None:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fairfix: error:"), res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def _train(data, out, *extra):
    return runner.invoke(app, ["train", str(data), "--label", "y", "--features", "x0,x1", "--epochs", "1",
                               "--hidden", "4", "--out", str(out), *extra])


def test_force_never_replaces_a_pipe_or_device(tmp_path):
    _frame().to_csv(tmp_path / "d.csv", index=False)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    res = runner.invoke(app, ["audit", str(tmp_path / "d.csv"), "--label", "y", "--pred", "p", "--group", "g",
                              "--output", str(fifo), "--force"])
    _exit_2(res, "not a regular file", "--force replaces only regular files")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_force_never_replaces_a_symlink(tmp_path):
    _frame().to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "target.json").write_text("keep")
    os.symlink(tmp_path / "target.json", tmp_path / "link.json")
    res = runner.invoke(app, ["audit", str(tmp_path / "d.csv"), "--label", "y", "--pred", "p", "--group", "g",
                              "--output", str(tmp_path / "link.json"), "--force"])
    _exit_2(res, "is a symlink")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "target.json").read_text() == "keep"


@pytest.mark.parametrize("command", ["audit", "predict"])
def test_output_may_not_be_the_input(tmp_path, command):
    data = tmp_path / "d.csv"
    _frame().to_csv(data, index=False)
    before = data.read_bytes()
    if command == "audit":
        args = ["audit", str(data), "--label", "y", "--pred", "p", "--group", "g", "--format", "csv"]
    else:
        assert _train(data, tmp_path / "m").exit_code == 0
        args = ["predict", str(data), "--model", str(tmp_path / "m")]
    res = runner.invoke(app, [*args, "--output", str(data), "--force"])
    _exit_2(res, "is the input")
    assert data.read_bytes() == before


def test_train_force_never_deletes_a_folder_holding_its_data(tmp_path):
    (tmp_path / "data").mkdir()
    data = tmp_path / "data" / "train.csv"
    _frame().to_csv(data, index=False)
    _exit_2(_train(data, tmp_path / "data", "--force"), "holds the input")
    assert data.is_file()


def test_train_force_replaces_only_fairfix_artifacts(tmp_path):
    data = tmp_path / "d.csv"
    _frame().to_csv(data, index=False)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    _exit_2(_train(data, tmp_path / "plain", "--force"), "not a fairfix artifact")
    assert (tmp_path / "plain" / "notes.txt").read_text() == "x"
    assert _train(data, tmp_path / "m").exit_code == 0
    assert _train(data, tmp_path / "m", "--force").exit_code == 0


def test_train_out_dot_force_is_exit_2(tmp_path, monkeypatch):
    data = tmp_path / "d.csv"
    _frame().to_csv(data, index=False)
    monkeypatch.chdir(tmp_path)
    _exit_2(_train("d.csv", ".", "--force"), "working directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]
