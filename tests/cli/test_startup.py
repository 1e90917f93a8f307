"""The command line's start: usage lines, the one-command app, and the Typer wrapper in use."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from fairfix.cli import _COMMANDS, _fastparams, app, build_app

runner = CliRunner()


def _usage(argv: list[str]) -> str:
    out = subprocess.run([sys.executable, "-m", "fairfix", *argv], capture_output=True, text=True,
                         env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}, check=True).stdout
    return next(line.strip() for line in out.splitlines() if "Usage:" in line)


def test_audit_usage_line_names_data() -> None:
    line = _usage(["audit", "-h"])
    assert "[OPTIONS] DATA..." in line and "{" not in line, line


@pytest.mark.parametrize(("cmd", "args"), [("train", "DATA"), ("compare", "BEFORE AFTER"), ("run", "RECIPE"),
                                           ("report", "SOURCE")])
def test_usage_lines_of_other_commands(cmd: str, args: str) -> None:
    result = runner.invoke(build_app(cmd), [cmd, "--help"], env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"[OPTIONS] {args}" in result.output, result.output


def test_one_command_app_holds_only_that_command() -> None:
    assert [c.name for c in build_app("audit").registered_commands] == ["audit"]
    assert sorted(c.name for c in app.registered_commands) == sorted(_COMMANDS)


def test_the_typer_wrapper_is_installed() -> None:
    """The wrapper of Typer's internals engages with the pinned Typer (pyproject.toml), or fails here."""
    assert _fastparams.install() is True, f"fairfix/cli/_fastparams.py does not fit Typer {typer.__version__}"
