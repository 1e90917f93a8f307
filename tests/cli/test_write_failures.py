"""Outputs that cannot be written are exit 2 naming the path, checked before any work (issue 20, defects 5, 6, 9).

A missing folder, a read-only folder and a full disk (``RLIMIT_FSIZE``: writes fail with
EFBIG as they would with ENOSPC) for every command that writes; and every file fairfix
writes gets ``0666`` minus the umask.
"""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fairfix.cli import app
from tests.cli.frames import small_frame
from tests.cli.test_audit_cli import assert_one_line_error

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def _frame(n: int = 300) -> pd.DataFrame:
    return small_frame(n, seed=1)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with data and a model, made once."""
    d = tmp_path_factory.mktemp("writes")
    _frame().to_csv(d / "d.csv", index=False)
    res = runner.invoke(app, ["train", str(d / "d.csv"), "--label", "y", "--features", "x0,x1", "--epochs", "1",
                              "--hidden", "16,8", "--out", str(d / "m"), "--quiet"])
    assert res.exit_code == 0, res.output
    yield d


def _commands(root: Path, out: Path) -> dict[str, list[str]]:
    data, model = str(root / "d.csv"), str(root / "m")
    return {
        "train": ["train", data, "--label", "y", "--features", "x0,x1", "--epochs", "1", "--hidden", "4",
                  "--out", str(out)],
        "detect": ["detect", data, "--model", model, "--group", "g", "--minority", "b", "--epochs", "1",
                   "--out", str(out)],
        "correct": ["correct", data, "--model", model, "--label", "y", "--group", "g", "--epochs", "1",
                    "--out", str(out)],
        "predict": ["predict", data, "--model", model, "-o", str(out)],
        "audit": ["audit", data, "--model", model, "--label", "y", "--group", "g", "--format", "json",
                  "--output", str(out)],
    }


COMMANDS = ["train", "detect", "correct", "predict", "audit"]
WORK = {  # what each command would do first: it must not be reached
    "train": "fairfix.training.train_model",
    "detect": "fairfix.detect.fit.fit_detector",
    "correct": "fairfix.correct.run.correct",
    "predict": "fairfix.predict.predict",
    "audit": "fairfix._audit.audit",
}


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_output_folder_is_exit_2_before_any_work(root: Path, tmp_path: Path, command: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_work(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(WORK[command], no_work)
    out = tmp_path / "no" / "such" / "folder" / "out.csv"
    res = runner.invoke(app, _commands(root, out)[command])
    assert_one_line_error(res, str(out), f"folder {out.parent} does not exist")
    assert not (tmp_path / "no").exists()  # no folder created on the way


def test_run_out_in_a_missing_folder_is_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "no" / "run"
    res = runner.invoke(app, ["run", str(REPO / "recipes" / "adult.yaml"), "--out", str(out)])
    assert_one_line_error(res, f"folder {out.parent} does not exist")
    assert not (tmp_path / "no").exists()


def _run(args: list[str], cwd: Path, limit_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    def setup() -> None:
        if limit_bytes is not None:  # a full disk: writes past the limit fail (EFBIG), as ENOSPC would
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "FAIRFIX_NO_PROGRESS": "1", "HOME": str(cwd), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "fairfix", *args], cwd=cwd, env=env, preexec_fn=setup,
                          capture_output=True, text=True, timeout=300)


def _one_line(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fairfix: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
    for f in fragments:
        assert f in errors[0], (f, errors[0])


@pytest.mark.parametrize("command", COMMANDS)
def test_full_disk_is_exit_2_naming_the_output(root: Path, tmp_path: Path, command: str) -> None:
    out = tmp_path / "out.csv"
    proc = _run(_commands(root, out)[command], tmp_path, limit_bytes=300)
    shown = ".checkpoint" if command == "correct" else str(out)  # correct's first write is its checkpoint
    _one_line(proc, shown, "cannot write", "File too large")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".probe"))]


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_folder_is_exit_2_before_any_work(root: Path, tmp_path: Path, command: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder on a read-only file system (EROFS, which root gets too): refused before the work starts."""
    import errno

    ro = tmp_path / "ro"
    ro.mkdir()
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(path: object) -> None:
        if str(path).startswith(str(ro) + os.sep):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def ro_open(path, flags, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def ro_mkdir(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def no_work(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)
    monkeypatch.setattr(WORK[command], no_work)
    out = ro / "out.csv"
    res = runner.invoke(app, _commands(root, out)[command])
    assert_one_line_error(res, str(out), "cannot write", "Read-only file system")
    assert list(ro.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0555 folder (the EROFS test above covers root)")
@pytest.mark.parametrize("command", COMMANDS)
def test_unwritable_folder_is_exit_2(root: Path, tmp_path: Path, command: str) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        out = ro / "out.csv"
        _one_line(_run(_commands(root, out)[command], tmp_path), str(out), "cannot write", "Permission denied")
    finally:
        os.chmod(ro, 0o755)


@pytest.mark.parametrize("command", ["predict", "audit", "train"])
@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_new_output_files_follow_the_umask(root: Path, tmp_path: Path, command: str, mask: int) -> None:
    out = tmp_path / ("out" if command == "train" else "out.csv")
    old = os.umask(mask)
    try:
        res = runner.invoke(app, [*_commands(root, out)[command], "--quiet"] if command != "audit"
                            else _commands(root, out)[command])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    files = [out] if out.is_file() else [p for p in out.rglob("*") if p.is_file()]
    assert files
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, (f, oct(f.stat().st_mode))
