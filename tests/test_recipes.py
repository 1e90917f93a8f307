"""Recipes: validation errors that name file, line and key; the run pipeline and its resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairfix import errors
from fairfix.cli import app
from fairfix.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    if "shared/data" in path.read_text() and not SHARED.is_dir():
        pytest.skip("needs the project's shared data folder")
    recipe = load_recipe(path)
    assert recipe.section("data")["label"]


SMALL = """\
name: small
data:
  train: adult:train
  test: adult:test
  label: income
  group: sex
  audit_groups: [sex, race]
  sample: 3000
model:
  train: {hidden: [16, 8], epochs: 2, seed: 0}
detector: {epochs: 2}
correct: {epochs: 1}
audit: {bootstrap: 50}
"""


@pytest.mark.parametrize(("edit", "line", "message"), [
    (("detector: {epochs: 2}", "detecter: {epochs: 2}"), 11, "unknown key 'detecter' (did you mean 'detector'?)"),
    (("  sample: 3000", "  sample: 3000\n  lable: y"), 9, "unknown key 'data.lable' (did you mean 'label'?)"),
    (("  train: adult:train", "  train: nowhere.csv"), 3, "data.train: no such file"),
    (("audit: {bootstrap: 50}", "audit:\n  fail_on: [\"wga<0.5\"]"), 14, "unknown metric 'wga'"),
    (("audit: {bootstrap: 50}", "audit: {bootstrap: many}"), 13, "'audit.bootstrap' must be an integer"),
    (("correct: {epochs: 1}", "correct: {epochs: 0}"), 12, "epochs=0 is out of range"),
    (("  label: income\n", ""), 2, "'data' needs the key 'label'"),
])
def test_bad_recipe_names_key_and_line(tmp_path, edit, line, message):
    text = SMALL.replace(*edit)
    assert text != SMALL
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(errors.UsageError) as exc:
        load_recipe(path)
    assert message in str(exc.value)
    assert f"{path}:{line}:" in str(exc.value)
    res = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_run_resumes_without_redoing_finished_steps(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", str(path), "--out", str(out), "--until", "detect"])
    assert res.exit_code == 0, res.output
    first = json.loads((out / "steps.json").read_text())
    assert set(first) == {"train", "audit_before", "detect"}
    mtimes = {p: (out / p / "fairfix.json").stat().st_mtime_ns for p in ("model", "detector")}
    res = runner.invoke(app, ["run", str(path), "--out", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert "train: unchanged, skipped" in res.stderr and "detect: unchanged, skipped" in res.stderr
    steps = json.loads((out / "steps.json").read_text())
    assert steps["train"] == first["train"] and steps["detect"] == first["detect"]
    assert {p: (out / p / "fairfix.json").stat().st_mtime_ns for p in mtimes} == mtimes
    doc = json.loads(res.stdout)
    assert doc["schema"] == "fairfix.compare/1" and doc["before"]["group_columns"] == ["sex", "race"]
    for name in ("audit_before.json", "audit_after.json", "compare.json", "bundle/fairfix.json"):
        assert (out / name).is_file()
    # a changed input reruns the steps that depend on it, and only those
    path.write_text(SMALL.replace("correct: {epochs: 1}", "correct: {epochs: 2}"))
    res = runner.invoke(app, ["run", str(path), "--out", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert "train: unchanged, skipped" in res.stderr and "correct: done" in res.stderr


def test_recipe_gate_trips_exit_1(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text(SMALL + "compare:\n  fail_on: [\"delta.accuracy<5\"]\n")
    res = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--format", "json"])
    assert res.exit_code == 1, res.output
    assert "gate tripped: delta.accuracy<5" in res.stderr


def test_digits_color_recipe_end_to_end(tmp_path):
    """The vision path: generated coloured digits, a factory CNN, and a real colour-shortcut disparity."""
    import yaml

    raw = yaml.safe_load((ROOT / "recipes" / "digits_color.yaml").read_text())
    raw["model"]["train"].update(epochs=12, patience=4)
    raw["detector"]["epochs"] = 5
    raw["correct"]["epochs"] = 2
    raw["audit"]["bootstrap"] = 50
    path = tmp_path / "digits_color.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", str(path), "--out", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert set(json.loads((out / "steps.json").read_text())) == {
        "train", "audit_before", "detect", "correct", "audit_after", "compare"}
    manifest = json.loads((out / "model" / "fairfix.json").read_text())
    assert manifest["model_kind"] == "factory"
    assert manifest["config"]["factory"] == "fairfix.models.vision:small_cnn"
    assert manifest["config"]["features"] == [f"p{i}" for i in range(192)]
    for name in ("detector/fairfix.json", "bundle/fairfix.json", "audit_before.json", "audit_after.json",
                 "compare.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "detector" / "fairfix.json").read_text())["config"]["layer"] in (None, "fc1")
    before = json.loads((out / "audit_before.json").read_text())
    assert before["group_columns"] == ["colour"] and before["n"] == 597
    # training-like accuracy: the base on `correct`'s validation rows, which it never saw
    # (hold_out_validation), where colour agrees with the label as in training
    seen = json.loads((out / "bundle" / "compare.json").read_text())["base_validation"]["accuracy"]
    wga = before["summary"]["worst_group_accuracy"]
    assert seen > 0.85 and wga < seen - 0.15, (seen, wga)
    worst = before["summary"]["worst_group"]
    assert (worst["group"]["colour"], worst["label"]) in {("red", 0), ("green", 1)}  # colour flipped
    doc = json.loads(res.stdout)
    assert doc["schema"] == "fairfix.compare/1" and doc["recipe"] == "digits_color"
