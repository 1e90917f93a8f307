"""A reader that closes stdout early (`| head -1`) ends fairfix quietly with exit 0, never 1 (issue 11, defect 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fairfix.cli import app


def _run_into_closed_pipe(args: list[str], cwd) -> subprocess.CompletedProcess:
    r, w = os.pipe()
    os.close(r)  # the reader is gone before fairfix writes a byte: every write is EPIPE
    try:
        return subprocess.run([sys.executable, "-m", "fairfix", *args], stdout=w, stderr=subprocess.PIPE,
                              text=True, cwd=cwd, timeout=120,
                              env={**os.environ, "FAIRFIX_NO_PROGRESS": "1", "COLUMNS": "100"})
    finally:
        os.close(w)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    (d / "p.csv").write_text("y,p,g\n" + "".join(f"{i % 2},{(i // 3) % 2},z{i % 40}\n" for i in range(2000)))
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, ["audit", str(d / "p.csv"), "--label", "y", "--pred", "p", "--group", "g",
                                   "--bootstrap", "0", "--format", "json"])
    assert res.exit_code == 0, res.output
    (d / "a.json").write_text(res.stdout)
    assert json.loads(res.stdout)["schema"] == "fairfix.audit/1"
    return d


@pytest.mark.parametrize("args", [
    ["audit", "p.csv", "--label", "y", "--pred", "p", "--group", "g", "--bootstrap", "0"],
    ["audit", "p.csv", "--label", "y", "--pred", "p", "--group", "g", "--bootstrap", "0", "--format", "json"],
    ["audit", "--help"],
    ["--help"],
    ["compare", "a.json", "a.json"],
], ids=["audit-table", "audit-json", "audit-help", "help", "compare"])
def test_closed_stdout_exits_0_quietly(files, args):
    proc = _run_into_closed_pipe(args, files)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert "error" not in proc.stderr


def test_tripped_gate_still_exits_1_on_an_open_pipe(files):
    proc = subprocess.run([sys.executable, "-m", "fairfix", "audit", "p.csv", "--label", "y", "--pred", "p",
                           "--group", "g", "--bootstrap", "0", "--fail-on", "accuracy>0"],
                          capture_output=True, text=True, cwd=files, timeout=120)
    assert proc.returncode == 1 and "gate tripped" in proc.stderr
