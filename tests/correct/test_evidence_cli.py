"""The guard's evidence through the CLI: cross-fitted by default, a plain split on request, memorised rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fairfix.cli import app

from .test_fairnet import make_frame

runner = CliRunner()
FAST = ["--steps", "40", "--eval-every", "20"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("ev")
    make_frame(1000, seed=3).to_csv(d / "base.csv", index=False)  # the base's rows
    make_frame(900, seed=7).to_csv(d / "held.csv", index=False)  # rows the base never saw
    make_frame(600, seed=4).to_csv(d / "test.csv", index=False)
    res = runner.invoke(app, ["train", str(d / "base.csv"), "--label", "y", "--group", "grp",
                              "--out", str(d / "model"), "--epochs", "4", "--hidden", "32,16"])
    assert res.exit_code == 0, res.output
    return d


def _correct(d, data, out, *extra):
    res = runner.invoke(app, ["correct", str(d / data), "--model", str(d / "model"), "--label", "y", "--group", "grp",
                              "--minority", "min", *FAST, "--out", str(d / out), "--format", "json", *extra])
    assert res.exit_code == 0, (res.stderr, res.exception)
    return json.loads(res.stdout), res.stderr


def test_cross_fitting_judges_every_row_and_says_so(ws):
    doc, _ = _correct(ws, "held.csv", "b_cf", "--folds", "3")
    ev = doc["evidence"]
    assert ev["kind"] == "cross-fit" and ev["folds"] == 3 and ev["rows"] == 900 and ev["val_fraction"] is None
    assert ev["budget"] == 40 and ev["candidates"] == len(doc["sweep"])
    assert {r["steps"] for r in doc["sweep"]} == {20, 40}
    # without --eval the audits are the base's and the held-out adapters' predictions on every row of DATA
    assert doc["evaluated_on"] == "out-of-fold predictions on DATA (3 folds)"
    assert doc["before"]["n"] == doc["after"]["n"] == 900
    assert doc["before"]["summary"]["accuracy"] == pytest.approx(doc["base_validation"]["accuracy"])
    chosen = doc["chosen"]
    if chosen is not None:  # the after-audit is the chosen setting's out-of-fold figures
        assert doc["after"]["summary"]["accuracy"] == pytest.approx(chosen["accuracy"])
        assert doc["after"]["summary"]["worst_group_accuracy"] == pytest.approx(chosen["worst_group_accuracy"])
        assert chosen["wga_gain_lower"] > 0 and chosen["accuracy_ok"]
    # every row passing the guard has a WGA gain bound above zero
    assert all(r["wga_gain_lower"] > 0 for r in doc["sweep"] if r["passes_guard"])
    smallest = min(c["n"] for c in doc["before"]["cells"])
    assert ev["smallest_cell_rows"] == smallest


def test_val_fraction_is_a_plain_split(ws):
    doc, _ = _correct(ws, "held.csv", "b_split", "--val-fraction", "0.2")
    ev = doc["evidence"]
    assert ev["kind"] == "split" and ev["folds"] is None and ev["val_fraction"] == 0.2
    assert ev["rows"] == doc["before"]["n"] == pytest.approx(180, abs=4)
    assert doc["evaluated_on"] == "validation split"


def test_the_table_shows_the_guards_evidence(ws):
    res = runner.invoke(app, ["correct", str(ws / "held.csv"), "--model", str(ws / "model"), "--label", "y",
                              "--group", "grp", "--minority", "min", *FAST, "--folds", "2", "--out",
                              str(ws / "b_table"), "--format", "markdown"])
    assert res.exit_code == 0, res.stderr
    assert "| evidence | rows | smallest cell | accuracy | WGA | WGA gain bound |" in res.stdout
    assert "| 2-fold cross-fit | 900 |" in res.stdout
    assert "the guard's evidence (held-out rows, base →" in res.stdout


def test_memorised_rows_are_named_in_one_line(ws):
    doc, err = _correct(ws, "base.csv", "b_mem", "--folds", "2")
    assert any("DATA is the table the base model was trained on" in w for w in doc["warnings"])
    assert "rows the base has fitted teach the adapter little" in err
    doc, err = _correct(ws, "held.csv", "b_fresh", "--folds", "2")
    assert not any("fitted" in w for w in doc["warnings"]) and "has fitted" not in err


def test_after_figures_without_eval_are_called_optimistic_in_one_line(ws):
    """Without --eval the after-figures are on the rows the guard chose from: out-of-fold, yet chosen on."""
    doc, err = _correct(ws, "held.csv", "b_oof", "--folds", "2")
    lines = [line for line in err.splitlines() if "optimistic" in line]
    assert doc["adapter_enabled"]  # (with the adapter off after equals before: no such line)
    assert len(lines) == 1 and "--eval" in lines[0] and "out-of-fold" in lines[0], err
    assert lines[0].startswith("fairfix: warning: ") and any("optimistic" in w for w in doc["warnings"])
    doc, err = _correct(ws, "held.csv", "b_eval", "--folds", "2", "--eval", str(ws / "held.csv"))
    assert "optimistic" not in err and not any("optimistic" in w for w in doc["warnings"])


def test_an_adapter_turned_down_says_why_in_one_line(ws, tmp_path):
    # labels that are the base's own predictions: it is right on every cell, nothing can raise its worst cell
    from fairfix.models import load_model

    model = load_model(ws / "model")
    frame = make_frame(400, seed=11)
    frame["y"] = np.asarray(model.classes, dtype=object)[model.predict_proba(frame).argmax(1)]
    frame.to_csv(tmp_path / "own.csv", index=False)
    res = runner.invoke(app, ["correct", str(tmp_path / "own.csv"), "--model", str(ws / "model"), "--label", "y",
                              "--group", "grp", "--minority", "min", *FAST, "--folds", "2",
                              "--out", str(tmp_path / "b"), "--format", "json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert not doc["adapter_enabled"] and doc["chosen"] is None
    assert doc["base_validation"]["worst_group_accuracy"] == 1.0
    lines = [ln for ln in res.stderr.splitlines() if "adapter disabled" in ln]
    assert len(lines) == 1 and doc["guard"]["reasons"][0] in lines[0]
    assert doc["guard"]["reasons"][-1].startswith("nothing passed the guard")


@pytest.mark.parametrize("args, message", [
    (["--folds", "1"], "folds=1"),
    (["--steps", "0"], "steps=0"),
    (["--objective", "hinge"], "objective='hinge'"),
    (["--balance", "none"], "balance='none'"),
    (["--val-fraction", "1.5"], "val_fraction=1.5"),
])
def test_bad_budget_options_are_exit_2_naming_the_value(ws, args, message):
    res = runner.invoke(app, ["correct", str(ws / "held.csv"), "--model", str(ws / "model"), "--label", "y",
                              "--group", "grp", *args, "--out", str(ws / "never")])
    assert res.exit_code == 2 and message in res.stderr
    assert not (ws / "never").exists()


def test_train_budget_in_steps_whatever_the_table_size(ws, tmp_path):
    for rows in (200, 1000):
        make_frame(rows, seed=1).to_csv(tmp_path / f"t{rows}.csv", index=False)
        res = runner.invoke(app, ["train", str(tmp_path / f"t{rows}.csv"), "--label", "y", "--out",
                                  str(tmp_path / f"m{rows}"), "--steps", "120", "--eval-every", "30",
                                  "--patience", "100", "--hidden", "8"])
        assert res.exit_code == 0, res.stderr
        training = json.loads((tmp_path / f"m{rows}" / "fairfix.json").read_text())["training"]
        assert training["steps_run"] == 120 and training["epochs_run"] == 4  # four evaluations, 30 steps apart
    res = runner.invoke(app, ["train", str(tmp_path / "t200.csv"), "--label", "y", "--out", str(tmp_path / "mx"),
                              "--steps", "10", "--epochs", "2"])
    assert res.exit_code == 2 and "--epochs and --steps" in res.stderr


def test_an_adapter_below_the_detectors_tap_is_exit_2_not_a_crash(tmp_path):
    """One hidden layer: the detector reads it and the only adaptable layer runs before the gate decides."""
    make_frame(300, seed=2).to_csv(tmp_path / "d.csv", index=False)
    for args in (["train", str(tmp_path / "d.csv"), "--label", "y", "--group", "grp", "--hidden", "8", "--epochs", "2",
                  "--out", str(tmp_path / "m")],
                 ["detect", str(tmp_path / "d.csv"), "--model", str(tmp_path / "m"), "--group", "grp", "--minority",
                  "min", "--epochs", "2", "--out", str(tmp_path / "det")]):
        assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, ["correct", str(tmp_path / "d.csv"), "--model", str(tmp_path / "m"), "--label", "y",
                              "--group", "grp", "--detector", str(tmp_path / "det"), *FAST, "--folds", "2",
                              "--out", str(tmp_path / "b")])
    assert res.exit_code == 2, res.stderr
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("fairfix: error:")]
    assert len(err) == 1 and "runs before the gate decides" in err[0] and "--targets" in err[0]
    assert not (tmp_path / "b").exists()
