"""`make demo` ends with the digits run's HTML report and commands that the CLI accepts as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer.main

from fairfix.cli import app

MAKEFILE = Path(__file__).resolve().parent.parent / "Makefile"


def demo_recipe() -> list[str]:
    lines = MAKEFILE.read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("demo:")))
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        out.append(line.strip())
    return out


def test_demo_writes_the_digits_report_then_prints_what_to_try_next():
    recipe = demo_recipe()
    report = [i for i, line in enumerate(recipe) if "fairfix report $(DIGITS)/compare.json --html" in line]
    runs = [i for i, line in enumerate(recipe) if "fairfix run recipes/" in line]
    assert report and runs and report[0] > max(runs)  # the report of the digits run, after every run
    commands = [re.sub(r"\s+#.*$", "", line[len('@echo "  '):-1]) for line in recipe
                if line.startswith('@echo "  ') and "fairfix " in line]
    assert len(commands) == 2 and any("open $(DIGITS)/report.html" in line for line in recipe)
    root = typer.main.get_command(app)
    for command in commands:
        argv = shlex.split(command.replace("$(BIN)/", "").replace("$(DIGITS)", "demo-output/digits_color"))
        assert argv[0] == "fairfix"
        sub = root.commands[argv[1]]  # type: ignore[attr-defined]
        sub.make_context(argv[1], argv[2:])  # raises on an unknown option or a bad value
