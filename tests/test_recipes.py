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


# -- issue 11: a run replaces only what it wrote; recipe errors name file, line and key ---------------
def test_run_never_replaces_a_folder_it_did_not_write(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    out = tmp_path / "proj"
    (out / "model").mkdir(parents=True)
    (out / "model" / "notes.txt").write_text("x")
    res = runner.invoke(app, ["run", str(path), "--out", str(out), "--until", "train"])
    assert res.exit_code == 2, res.output
    assert "was not written by this run" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert (out / "model" / "notes.txt").read_text() == "x"
    res = runner.invoke(app, ["run", str(path), "--out", str(out), "--until", "train", "--force"])
    assert res.exit_code == 2, res.output
    assert (out / "model" / "notes.txt").read_text() == "x"


def test_run_reruns_its_own_step_with_force(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    out = tmp_path / "run"
    assert runner.invoke(app, ["run", str(path), "--out", str(out), "--until", "train"]).exit_code == 0
    assert json.loads((out / "steps.json").read_text())["train"]["outputs"] == ["model"]
    res = runner.invoke(app, ["run", str(path), "--out", str(out), "--until", "train", "--force"])
    assert res.exit_code == 0, res.output
    assert "train: done" in res.stderr


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", "..", "."])
def test_recipe_name_is_a_plain_name(tmp_path, name):
    path = tmp_path / "r.yaml"
    path.write_text(f"name: {json.dumps(name)}\n" + SMALL.split("\n", 1)[1])
    res = runner.invoke(app, ["run", str(path), "--check"])
    assert res.exit_code == 2, res.output
    assert f"{path}:1: name" in res.stderr and "plain name" in res.stderr


def _csv_recipe(tmp_path, **data):
    (tmp_path / "d.csv").write_text("a,b,y,g\n1,2,0,x\n3,4,1,y\n")
    lines = {"train": "d.csv", "label": "y", "group": "g", **data}
    body = "".join(f"  {k}: {v}\n" for k, v in lines.items())
    path = tmp_path / "r.yaml"
    path.write_text(f"data:\n{body}model:\n  train: {{epochs: 1}}\n")
    return path


@pytest.mark.parametrize(("data", "key", "message"), [
    ({"train": "sub"}, "data.train", "is a directory"),
    ({"train": "/etc/passwd"}, "data.train", "cannot tell the format"),
    ({"features": "[a, nope]"}, "data.features", "no column 'nope'"),
    ({"label": "nope"}, "data.label", "no column 'nope'"),
    ({"audit_groups": "[g, nope]"}, "data.audit_groups", "no column 'nope'"),
])
def test_check_catches_bad_data_entries(tmp_path, data, key, message):
    (tmp_path / "sub").mkdir()
    path = _csv_recipe(tmp_path, **data)
    res = runner.invoke(app, ["run", str(path), "--check"])
    assert res.exit_code == 2, res.output
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and message in line
    assert line.startswith(f"fairfix: error: {path}:") and f": {key}" in line


def test_run_time_error_names_recipe_line_and_key_and_leaves_no_empty_folder(tmp_path):
    path = _csv_recipe(tmp_path)
    path.write_text(path.read_text().replace("{epochs: 1}", "{epochs: 1, factory: 'nosuch_fairfix_pkg:make'}"))
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", str(path), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert f"{path}:6: model.train: " in res.stderr and "nosuch_fairfix_pkg" in res.stderr
    assert not out.exists()


@pytest.mark.parametrize("text", [b"a: &x [*x]\n", b"data: &a\n  train: *a\n", b"\x00\xff\xfe binary"])
def test_bad_yaml_is_exit_2(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_bytes(text)
    res = runner.invoke(app, ["run", str(path), "--check"])
    assert res.exit_code == 2, res.output
    assert str(path) in res.stderr and "unexpected" not in res.stderr


def test_recipe_group_list_runs_a_progressive_correction(tmp_path):
    """``data.group`` as a list: one detector and adapter per group, label modes per group."""
    path = tmp_path / "multi.yaml"
    path.write_text(SMALL.replace("  group: sex\n", "  group: [sex, race]\n  sensitive_fraction: [1.0, 0.5]\n")
                    .replace("detector: {epochs: 2}", "detector: {epochs: 2, mode: [full, partial]}"))
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", str(path), "--out", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [a["group"] for a in doc["attributes"]] == ["sex", "race"]
    assert [a["detector"]["mode"] for a in doc["attributes"]] == ["full", "partial"]
    manifest = json.loads((out / "bundle" / "fairfix.json").read_text())
    assert [a["group"] for a in manifest["attributes"]] == ["sex", "race"]
    assert json.loads((out / "steps.json").read_text()).keys() >= {"train", "audit_before", "correct", "compare"}
    bad = path.read_text().replace("mode: [full, partial]", "mode: [full, partial, none]")
    path.write_text(bad)
    res = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run2")])
    assert res.exit_code == 2 and "detector.mode has 3 values for 2 groups" in res.output


def test_run_says_on_stderr_what_correct_says(tmp_path):
    """Issue 20, defect 17: the guard's 'adapter disabled' and a gate passed without evidence, on stderr."""
    path = tmp_path / "quiet.yaml"
    text = SMALL.replace("correct: {epochs: 1}", "correct: {epochs: 1, guard_se: 10}")  # nothing passes
    text = text.replace("audit: {bootstrap: 50}", "audit:\n  bootstrap: 50\n  min_group_size: 100000\n"
                                                  "  fail_on: [\"equalized_odds_difference>0.99\"]")
    path.write_text(text)
    res = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["adapter_enabled"] is False
    assert "fairfix: warning: the bundle ships with the adapter disabled" in res.stderr
    assert ("fairfix: warning: gate passed without sufficient evidence: equalized_odds_difference>0.99: "
            "groups below --min-group-size") in res.stderr


def test_text_shortcut_recipe_runs_end_to_end_on_a_few_dozen_rows(tmp_path, monkeypatch):
    """recipes/text_shortcut.yaml on the WordNet excerpt: the packaged MiniLM trained, audited, detected,
    corrected under the guard and audited again (tiny sizes: the shipped recipe's sizes are benchmarked)."""
    import yaml

    monkeypatch.setenv("FAIRFIX_WORDNET", str(ROOT / "tests" / "data" / "wordnet" / "data.noun"))
    raw = yaml.safe_load((ROOT / "recipes" / "text_shortcut.yaml").read_text())
    raw["data"].update(sample=48, test_sample=40)
    raw["model"]["train"].update(max_length=24, batch_size=8)
    raw["detector"].update(epochs=2)
    raw["correct"].update(steps=4, eval_every=2, batch_size=8, strengths=[1.0], guard_bootstrap=50)
    raw["audit"].update(bootstrap=0, min_group_size=5)
    path = tmp_path / "text_shortcut.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", str(path), "--out", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    steps = json.loads((out / "steps.json").read_text())
    assert set(steps) == {"train", "audit_before", "detect", "correct", "audit_after", "compare"}
    before = json.loads((out / "audit_before.json").read_text())
    assert before["n"] == 40 and {g["group"]["cue"] for g in before["groups"]} == {"with", "without"}
    manifest = json.loads((out / "model" / "fairfix.json").read_text())
    assert manifest["model_kind"] == "hf_sequence_classification"
    assert manifest["training"]["train_rows"] == 24  # model.correction_rows: half of the 48 rows
    record = json.loads((out / "bundle" / "fairfix.json").read_text())
    assert record["tap_layer"] == "bert.encoder.layer.2"  # LoRA on query/value of the layers after the tap
    assert record["targets"] == [f"bert.encoder.layer.{i}.attention.self.{p}"
                                 for i in (3, 4, 5) for p in ("query", "value")]
    compare = json.loads((out / "compare.json").read_text())
    assert compare["evidence"]["kind"] == "cross-fit" and compare["evidence"]["rows"] == 24
    assert compare["evidence"]["folds"] == 2 and compare["evidence"]["budget"] == 4
