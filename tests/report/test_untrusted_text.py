"""Text from the data is shown as written: no Rich markup, no raw terminal escapes, no HTML in Markdown
(issue 20, defects 11 and 12)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fairfix.cli import app

runner = CliRunner()
MARKUP = ["[red]Amer", "Mex[ico]", "PR [b]bold[/b]", "esc\x1b[31mred"]
HTML = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "<!-- fairfix:fairness:end -->"]


def _preds(tmp_path: Path, groups: list[str], classes: int = 2, name: str = "p.csv") -> Path:
    rng = np.random.default_rng(3)
    n = 60 * len(groups)
    names = np.array(["low", "mid", "high"][:classes] if classes > 2 else [0, 1], dtype=object)
    frame = pd.DataFrame({"g": np.repeat(groups, 60), "y": names[rng.integers(0, classes, n)],
                          "p": names[rng.integers(0, classes, n)]})
    frame.to_csv(tmp_path / name, index=False)
    return tmp_path / name


def _audit(data: Path, *extra: str) -> object:
    return runner.invoke(app, ["audit", str(data), "--label", "y", "--pred", "p", "--group", "g", *extra],
                         env={"NO_COLOR": "1", "COLUMNS": "200"})


def test_group_values_with_square_brackets_print_as_written(tmp_path: Path) -> None:
    res = _audit(_preds(tmp_path, MARKUP))
    assert res.exit_code == 0, res.output
    for value in ("[red]Amer", "Mex[ico]", "PR [b]bold[/b]"):
        assert value in res.stdout, value


def test_a_raw_terminal_escape_in_a_group_value_never_reaches_the_terminal(tmp_path: Path) -> None:
    res = _audit(_preds(tmp_path, MARKUP))
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.stdout
    assert "esc\\x1b[31mred" in res.stdout


def test_multiclass_headers_name_their_classes(tmp_path: Path) -> None:
    res = _audit(_preds(tmp_path, ["a", "b"], classes=3))
    assert res.exit_code == 0, res.output
    for c in ("low", "mid", "high"):  # "[low]" was read as a Rich style tag
        assert f"recall[{c}]" in res.stdout


def test_compare_table_prints_group_values_as_written(tmp_path: Path) -> None:
    data = _preds(tmp_path, MARKUP)
    for name in ("a.json", "b.json"):
        assert _audit(data, "--format", "json", "--output", str(tmp_path / name)).exit_code == 0
    res = runner.invoke(app, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")],
                        env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for value in ("g=[red]Amer", "g=Mex[ico]", "g=PR [b]bold[/b]"):
        assert value in res.stdout, value
    assert "\x1b" not in res.stdout


@pytest.mark.parametrize("command", ["audit", "compare"])
def test_markdown_escapes_html_in_group_values(tmp_path: Path, command: str) -> None:
    data = _preds(tmp_path, HTML)
    if command == "audit":
        res = _audit(data, "--format", "markdown")
    else:
        assert _audit(data, "--format", "json", "--output", str(tmp_path / "a.json")).exit_code == 0
        res = runner.invoke(app, ["compare", str(tmp_path / "a.json"), str(tmp_path / "a.json"),
                                  "--format", "markdown"])
    assert res.exit_code == 0, res.output
    for raw in ("<script", "<img", "<!--"):
        assert raw not in res.stdout, raw
    assert "&lt;script&gt;" in res.stdout and "&lt;!-- fairfix:fairness:end --&gt;" in res.stdout


def test_model_card_with_html_in_group_values_stays_updatable(tmp_path: Path) -> None:
    data = _preds(tmp_path, HTML)
    assert _audit(data, "--format", "json", "--output", str(tmp_path / "a.json")).exit_code == 0
    card = tmp_path / "README.md"
    for _ in range(2):  # the second update found "1 and 2 markers" before
        res = runner.invoke(app, ["report", str(tmp_path / "a.json"), "--model-card", str(card)])
        assert res.exit_code == 0, res.output
    text = card.read_text()
    assert text.count("<!-- fairfix:fairness:end -->") == 1
    assert "<script" not in text and "<img" not in text
    assert json.loads((tmp_path / "a.json").read_text())["groups"]  # the audit itself keeps the raw values


LONG = ["Amer-Indian-Eskimo-Aleut-Inuit-Yupik", "Native-Hawaiian-or-Other-Pacific-Islander"]


@pytest.mark.parametrize("command", ["audit", "compare"])
def test_long_group_names_wrap_and_are_never_cut_at_80_columns(tmp_path: Path, command: str) -> None:
    """Issue 20, defect 16: compare cut them (`race=Amer-Indi...`)."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"g": np.repeat(LONG, 60), "h": rng.choice(["Female-identified", "Male-identified"], 120),
                          "y": rng.integers(0, 2, 120), "p": rng.integers(0, 2, 120)})
    frame.to_csv(tmp_path / "p.csv", index=False)
    args = ["audit", str(tmp_path / "p.csv"), "--label", "y", "--pred", "p", "--group", "g", "--group", "h"]
    if command == "audit":
        res = runner.invoke(app, args, env={"NO_COLOR": "1", "COLUMNS": "80"})
    else:
        assert runner.invoke(app, [*args, "--format", "json", "--output", str(tmp_path / "a.json")]).exit_code == 0
        res = runner.invoke(app, ["compare", str(tmp_path / "a.json"), str(tmp_path / "a.json")],
                            env={"NO_COLOR": "1", "COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert "…" not in res.stdout
    first = "".join(line.split("│")[1].strip() for line in res.stdout.splitlines() if line.startswith("│"))
    for name in LONG:  # folded over lines, every character kept
        assert name in first, (name, first)


def test_a_raw_terminal_escape_never_reaches_stderr_either(tmp_path: Path) -> None:
    """Warnings quote group values too (here: the groups below --min-group-size)."""
    res = _audit(_preds(tmp_path, MARKUP), "--min-group-size", "1000", "--fail-on", "accuracy_gap>0.99")
    assert res.exit_code == 0, res.output
    assert "gate passed without sufficient evidence" in res.stderr
    assert "\x1b" not in res.stderr and "esc\\x1b[31mred" in res.stderr
