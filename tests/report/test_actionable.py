"""Reports people can act on: the worst cell named as a (group, label) cell, "gate: every row",
and the default minority that is the larger group said as such."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

import fairfix
from fairfix.report.audit import minority_note
from fairfix.report.compare import build_compare, render_compare
from fairfix.report.html import render_html
from fairfix.report.model_card import fairness_section
from fairfix.report.render import Format, render


def _frame() -> pd.DataFrame:
    """race=White holds 84% of rows and the worst cell (White, label=no)."""
    rng = np.random.default_rng(0)
    race = np.where(np.arange(500) < 420, "White", "Black")
    y = rng.choice(["yes", "no"], 500)
    pred = np.where((race == "White") & (y == "no") & (rng.random(500) < 0.9), "yes", y)
    return pd.DataFrame({"race": race, "y": y, "p": pred})


def _docs():
    frame = _frame()
    before = fairfix.audit(frame, label="y", group=["race"], pred="p", bootstrap=0)
    worst = before.summary["worst_group"]
    share = float((frame["race"] == worst["group"]["race"]).mean())
    compare = build_compare(before.to_dict(), before.to_dict(), tau=0.5, extra={
        "gate": "all", "adapter_enabled": True,
        "detector_report": {"worst_cell": {**worst, "accuracy": before.summary["worst_group_accuracy"],
                                           "share": share}}},
        detector={"tpr": 1.0, "fpr": 0.0, "activation_rate": 1.0, "activation_rate_by_group": {"Black": 1.0,
                                                                                                "White": 1.0}})
    return before, compare


def test_the_worst_cell_is_named_with_its_label_everywhere():
    before, compare = _docs()
    acc = before.summary["worst_group_accuracy"]
    cell = f"race=White, label=no {acc:.3f}"
    assert before.summary["worst_group"] == {"group": {"race": "White"}, "label": "no"}
    assert f"worst cell | {cell}" in render(before, Format.markdown)
    assert "worst cell" in render(before, Format.table) and cell in render(before, Format.table)
    assert f"| worst cell | {cell} | {cell} |" in render_compare(compare, Format.markdown)
    page = render_html(before.to_dict())
    assert "worst cell" in page and cell in page
    assert f"label `no`, accuracy {acc:.3f}" in fairness_section(before.to_dict())


def test_gate_every_row_replaces_tpr_and_fpr():
    _, compare = _docs()
    buf = io.StringIO()
    render_compare(compare, Format.table, Console(file=buf, width=200, no_color=True))
    text = buf.getvalue()
    assert "detector: gate every row" in text and "every row" in text
    panel = text[text.index("detector: gate every row"):]
    assert "TPR" not in panel.split("\n\n")[0]
    page = render_html(compare)
    assert "every row" in page and "<th>TPR</th>" not in page[page.index("<h2>Detector</h2>"):]
    card = fairness_section(compare)
    assert "Gate: every row" in card and "| tau | TPR |" not in card


def test_a_default_minority_that_is_the_larger_group_says_which_cell_made_it():
    _, compare = _docs()
    note = minority_note(compare["detector_report"])
    assert note is not None and "race=White holds 84% of the rows" in note and "label=no" in note
    buf = io.StringIO()
    render_compare(compare, Format.table, Console(file=buf, width=300, no_color=True))
    assert "race=White holds 84% of the rows" in buf.getvalue()
    assert "race=White holds 84% of the rows" in render_html(compare)
    assert "The minority race=White holds 84% of the rows" in fairness_section(compare)
    # a minority that is the smaller group needs no note
    assert minority_note({"worst_cell": {"group": {"race": "Black"}, "label": "no", "accuracy": 0.5,
                                         "share": 0.16}}) is None


def test_detect_says_when_its_default_minority_is_the_larger_group(tmp_path):
    """White holds 84% of rows and, through label noise among its failing students, the worst cell."""
    from typer.testing import CliRunner

    from fairfix.cli import app

    rng = np.random.default_rng(1)
    n = 1500
    race = np.where(rng.random(n) < 0.84, "White", "Black")
    x = rng.normal(size=n)
    passed = x > 0
    noisy = (race == "White") & (rng.random(n) < 0.35)  # noisy labels: one of White's cells is the worst
    result = np.where(passed & ~noisy, "pass", "fail")
    pd.DataFrame({"x": x, "x2": rng.normal(size=n), "race": race, "result": result}).to_csv(tmp_path / "law.csv",
                                                                                          index=False)
    env = {"NO_COLOR": "1", "FAIRFIX_NO_PROGRESS": "1", "COLUMNS": "200"}
    run = CliRunner().invoke
    res = run(app, ["train", str(tmp_path / "law.csv"), "--label", "result", "--group", "race", "--steps", "100",
                    "--hidden", "16,8", "--out", str(tmp_path / "m")], env=env)
    assert res.exit_code == 0, res.output
    res = run(app, ["detect", str(tmp_path / "law.csv"), "--model", str(tmp_path / "m"), "--group", "race",
                    "--label", "result", "--epochs", "5", "--out", str(tmp_path / "d"), "--format", "json"], env=env)
    assert res.exit_code == 0, res.output
    import json

    report = json.loads(res.stdout)
    assert report["minority"] == ["White"] and report["worst_cell"]["group"] == {"race": "White"}
    label = report["worst_cell"]["label"]
    assert report["worst_cell"]["share"] == pytest.approx(0.84, abs=0.05)
    res = run(app, ["detect", str(tmp_path / "law.csv"), "--model", str(tmp_path / "m"), "--group", "race",
                    "--label", "result", "--epochs", "5", "--out", str(tmp_path / "d2")], env=env)
    assert "the minority race=White holds" in res.stdout and f"race=White, label={label}" in res.stdout
