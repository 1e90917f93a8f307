"""The docs keep up with the code (in the spirit of sqlite-utils' tests/test_docs.py).

Every command registered on ``fairfix.cli.app`` must have a section in docs/cli.md,
a heading like ``## `fairfix audit` ``, and every option of the command must appear
in that section (every spelling: ``--output`` and ``-o``), as must each argument's
metavar (``DATA``).  The commands and options are read from Typer's click command
(``typer.main.get_command``), so a command or option added later is checked without
touching this file.  docs/metrics.md must define every metric the engine computes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from fairfix.cli import app
from fairfix.metrics import rates

DOCS = Path(__file__).resolve().parents[1] / "docs"
CLI_MD = DOCS / "cli.md"
METRICS_MD = DOCS / "metrics.md"
ROOT = typer.main.get_command(app)
HEADING = re.compile(r"^(#{1,6})\s+`fairfix((?: [a-z0-9][a-z0-9-]*)*)`", re.MULTILINE)


def walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(path, command) for the root and every command below it, sub-groups included."""
    found = [(path, command)]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            found += walk(sub, (*path, name))
    return found


COMMANDS = walk(ROOT)


def spellings(param: Any) -> list[str]:
    """How a parameter is written on the command line: ``--output``, ``-o``, ``DATA``."""
    if param.param_type_name == "argument":
        return [(param.metavar or param.name).upper()]
    return [*param.opts, *param.secondary_opts]


OPTIONS = [
    (path, spelling)
    for path, command in COMMANDS
    for param in command.params
    if not getattr(param, "hidden", False)
    for spelling in spellings(param)
]


def command_name(path: tuple[str, ...]) -> str:
    return " ".join(("fairfix", *path))


def sections(text: str) -> dict[tuple[str, ...], str]:
    """Text under each ``fairfix ...`` heading, up to the next heading of its level or above."""
    heads = list(HEADING.finditer(text))
    out: dict[tuple[str, ...], str] = {}
    for m in heads:
        level = len(m[1])
        end = len(text)
        for nxt in re.finditer(r"^(#{1,6})\s", text[m.end():], re.MULTILINE):
            if len(nxt[1]) <= level:
                end = m.end() + nxt.start()
                break
        out[tuple(m[2].split())] = text[m.start():end]
    return out


@pytest.fixture(scope="module")
def documented() -> dict[tuple[str, ...], str]:
    return sections(CLI_MD.read_text(encoding="utf-8"))


def test_the_cli_has_commands() -> None:
    # Guards the introspection itself: an empty walk would make every test below vacuous.
    assert ("audit",) in dict(COMMANDS)
    assert ((), "--version") in OPTIONS
    assert (("audit",), "--fail-on") in OPTIONS and (("audit",), "-o") in OPTIONS


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS],
                         ids=[command_name(p) for p, _ in COMMANDS])
def test_command_has_a_section(documented: dict[tuple[str, ...], str],
                               path: tuple[str, ...]) -> None:
    assert path in documented, (
        f"docs/cli.md has no heading `{command_name(path)}` (e.g. ## `{command_name(path)}`)"
    )


@pytest.mark.parametrize(("path", "spelling"), OPTIONS,
                         ids=[f"{command_name(p)} {s}" for p, s in OPTIONS])
def test_option_is_documented(documented: dict[tuple[str, ...], str], path: tuple[str, ...],
                              spelling: str) -> None:
    section = documented.get(path, "")
    # A whole token: "-o" inside "--output" or "--group" inside "--group-size" does not count.
    pattern = rf"(?<![\w-]){re.escape(spelling)}(?![\w-])"
    assert re.search(pattern, section), (
        f"{spelling} of `{command_name(path)}` is not in its section of docs/cli.md"
    )


def test_sections_helper_stops_at_the_next_command() -> None:
    text = "# t\n## `fairfix a`\n--x\n### sub\n--y\n## `fairfix b`\n--z\n"
    got = sections(text)
    assert "--y" in got[("a",)] and "--z" not in got[("a",)]
    assert got[("b",)].strip().endswith("--z")


@pytest.mark.parametrize("code", ["0", "1", "2", "3"])
def test_exit_codes_are_documented(code: str) -> None:
    assert re.search(rf"^\| `{code}` \|", CLI_MD.read_text(encoding="utf-8"), re.MULTILINE)


@pytest.mark.parametrize("variable", ["NO_COLOR", "FAIRFIX_DEBUG"])
def test_environment_variables_are_documented(variable: str) -> None:
    assert f"| `{variable}` |" in CLI_MD.read_text(encoding="utf-8")


METRICS = sorted({*rates.SUMMARY_METRICS, *rates.GROUP_METRICS_BINARY,
                  *rates.PER_CLASS_METRICS, "n", "worst_group"})


@pytest.mark.parametrize("metric", METRICS)
def test_metric_is_defined_in_metrics_md(metric: str) -> None:
    # Each metric has a row of a definition table: | `name` | ...
    text = METRICS_MD.read_text(encoding="utf-8")
    assert re.search(rf"^\| [^|\n]*`{re.escape(metric)}`[^|\n]* \|", text, re.MULTILINE), metric
