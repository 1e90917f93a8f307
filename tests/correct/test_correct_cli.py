"""`fairfix correct` and `fairfix compare` through the CLI; interruption and --resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fairfix.cli import app
from fairfix.correct import CorrectConfig
from fairfix.correct.run import correct
from fairfix.detect.fit import DetectorConfig
from fairfix.models.tabular import TrainConfig, train_tabular

from .test_fairnet import make_frame

runner = CliRunner()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    d = tmp_path_factory.mktemp("ws")
    frame = make_frame(1200, seed=3)
    frame.to_csv(d / "train.csv", index=False)
    make_frame(600, seed=4).to_csv(d / "test.csv", index=False)
    res = runner.invoke(app, ["train", str(d / "train.csv"), "--label", "y", "--group", "grp",
                              "--out", str(d / "model"), "--epochs", "4", "--hidden", "32,16"])
    assert res.exit_code == 0, res.output
    return d


def test_correct_writes_bundle_and_prints_compare(workspace):
    d = workspace
    res = runner.invoke(app, ["correct", str(d / "train.csv"), "--model", str(d / "model"), "--label", "y",
                              "--group", "grp", "--minority", "min", "--epochs", "2", "--eval", str(d / "test.csv"),
                              "--out", str(d / "bundle"), "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "fairfix.compare/1"
    assert doc["before"]["n"] == doc["after"]["n"] == 600
    for k, v in doc["delta"].items():
        b, a = doc["before"]["summary"][k], doc["after"]["summary"][k]
        if v is not None:
            assert v == pytest.approx(a - b)
    assert set(doc["detector"]) >= {"tpr", "fpr", "activation_rate", "activation_rate_by_group"}
    for name in ("fairfix.json", "before.json", "after.json", "compare.json", "prototypes.safetensors",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "detector/fairfix.json"):
        assert (d / "bundle" / name).is_file(), name
    manifest = json.loads((d / "bundle" / "fairfix.json").read_text())
    assert manifest["kind"] == "bundle" and manifest["sweep"]
    # an existing bundle is not replaced without --force, and is left untouched
    before = (d / "bundle" / "fairfix.json").read_bytes()
    res = runner.invoke(app, ["correct", str(d / "train.csv"), "--model", str(d / "model"), "--label", "y",
                              "--group", "grp", "--out", str(d / "bundle")])
    assert res.exit_code == 2 and "--force" in res.stderr
    assert (d / "bundle" / "fairfix.json").read_bytes() == before
    # the audit of the bundle equals the bundle's own after.json
    res = runner.invoke(app, ["audit", str(d / "test.csv"), "--model", str(d / "bundle"), "--label", "y",
                              "--group", "grp", "--bootstrap", "0", "--format", "json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    after = json.loads((d / "bundle" / "after.json").read_text())
    assert got["summary"] == after["summary"] and got["groups"] == after["groups"]


def test_correct_guard_turning_everything_down_warns_and_exits_0(workspace):
    """A wrecked adapter (huge learning rate, on for every row): nothing passes the guard."""
    d = workspace
    res = runner.invoke(app, ["correct", str(d / "train.csv"), "--model", str(d / "model"), "--label", "y",
                              "--group", "grp", "--minority", "min", "--epochs", "1", "--lr", "50",
                              "--ce-weight", "0", "--margin", "100", "--tau", "0", "--guard-se", "0.5",
                              "--out", str(d / "off"), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert "adapter disabled" in res.stderr and "--guard-se" in res.stderr
    manifest = json.loads((d / "off" / "fairfix.json").read_text())
    assert manifest["adapter_enabled"] is False
    doc = json.loads(res.stdout)
    assert doc["guard"]["guard_se"] == 0.5 and doc["guard"]["reason"]
    # one line says why, and the compare JSON carries what the correction had to act on
    assert doc["guard"]["reasons"][-1].startswith("nothing passed the guard")
    assert doc["guard"]["reasons"][0] in res.stderr
    assert doc["correction"]["hinge_open_share"] == 1.0  # margin 100: every hinge open
    assert doc["correction"]["anchors"] > 0 and doc["correction"]["margin"] == 100
    assert all(v in (0, None) for v in doc["delta"].values())  # outputs equal the base model's


@pytest.mark.parametrize(("args", "message"), [
    (["--tau", "high"], "--tau 'high'"),
    (["--tau", "1.5"], "tau=1.5"),
    (["--distance", "manhattan"], "distance='manhattan'"),
    (["--minority", "nobody"], "--minority 'nobody' does not occur"),
    (["--resume"], "no checkpoint"),
    (["--groups", "everyone"], "groups='everyone'"),
])
def test_correct_bad_options_exit_2(workspace, args, message):
    d = workspace
    res = runner.invoke(app, ["correct", str(d / "train.csv"), "--model", str(d / "model"), "--label", "y",
                              "--group", "grp", "--epochs", "1", "--out", str(d / "never"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (d / "never").exists()


def test_compare_cli_gates_and_bad_files(workspace, tmp_path):
    d = workspace
    b, a = tmp_path / "before.json", tmp_path / "after.json"
    for path, extra in ((b, []), (a, ["--threshold", "0.3"])):  # two operating points of one model
        res = runner.invoke(app, ["audit", str(d / "test.csv"), "--model", str(d / "model"), "--label", "y",
                                  "--group", "grp", "--bootstrap", "0", "--output", str(path), *extra])
        assert res.exit_code == 0, res.output
    delta = json.loads(a.read_text())["summary"]["accuracy"] - json.loads(b.read_text())["summary"]["accuracy"]
    res = runner.invoke(app, ["compare", str(b), str(a), "--format", "json",
                              "--fail-on", f"delta.accuracy<{delta + 1.0}"])
    assert res.exit_code == 1 and "gate tripped" in res.stderr
    res = runner.invoke(app, ["compare", str(b), str(a), "--fail-on", f"delta.accuracy<{delta - 1.0}"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", str(b), str(a), "--fail-on", "delta.nonsense<0"])
    assert res.exit_code == 2 and "unknown metric" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something/1"}')
    res = runner.invoke(app, ["compare", str(bad), str(a)])
    assert res.exit_code == 2 and "fairfix.audit/1" in res.stderr
    res = runner.invoke(app, ["compare", str(tmp_path / "missing.json"), str(a)])
    assert res.exit_code == 2 and "no such file" in res.stderr
    res = runner.invoke(app, ["compare", str(b), str(a), "--format", "markdown"])
    assert res.exit_code == 0 and "| metric | before | after | delta |" in res.stdout


def test_interrupted_training_resumes_from_last_completed_fold(tmp_path):
    frame = make_frame(900, seed=5)
    model, _ = train_tabular(frame, label="y", features=["x0", "x1", "x2", "cat"],
                             config=TrainConfig(hidden=[16, 8], epochs=3, seed=0))
    det_cfg = DetectorConfig(epochs=3, seed=0)
    cfg = CorrectConfig(steps=20, eval_every=10, folds=3, seed=0)
    ckpt = tmp_path / "ckpt"

    def stop_in_second_fold(stage, done, total=None, metrics=None):
        if stage == "adapter" and done == 30:  # the first fold (20 steps) is complete, the second half done
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        correct(frame, model, label="y", group="grp", minority=["min"], detector_config=det_cfg, config=cfg,
                progress=stop_in_second_fold, checkpoint=ckpt)
    units = sorted(p.name for p in ckpt.glob("*.json"))
    assert len(units) == 1 and units[0].endswith("_0.json")  # one complete unit, nothing half-written
    assert not list(ckpt.glob(".*"))
    resumed: list[int] = []
    _, result = correct(frame, model, label="y", group="grp", minority=["min"], detector_config=det_cfg,
                        config=cfg, checkpoint=ckpt, resume=True,
                        progress=lambda s, d, t=None, m=None: resumed.append(d) if s == "adapter" else None)
    assert resumed[0] == 30  # the first fold was read, not redone
    assert {r["steps"] for r in result["record"]["sweep"]} == {10, 20}
    assert np.isfinite(result["record"]["base_validation"]["accuracy"])
    # the resumed run is the uninterrupted run: same sweep, same losses, same choice
    _, whole_result = correct(frame, model, label="y", group="grp", minority=["min"], detector_config=det_cfg,
                              config=cfg)
    assert result["record"]["sweep"] == whole_result["record"]["sweep"]
    assert result["record"]["unit_loss_histories"] == whole_result["record"]["unit_loss_histories"]
    assert result["record"]["chosen"] == whole_result["record"]["chosen"]


def test_resume_refuses_a_checkpoint_of_other_data_or_options(tmp_path):
    from fairfix import errors

    frame = make_frame(600, seed=5)
    model, _ = train_tabular(frame, label="y", features=["x0", "x1", "x2", "cat"],
                             config=TrainConfig(hidden=[16, 8], epochs=2, seed=0))
    det_cfg = DetectorConfig(epochs=2, seed=0)
    ckpt = tmp_path / "ckpt"
    correct(frame, model, label="y", group="grp", minority=["min"], detector_config=det_cfg,
            config=CorrectConfig(steps=10, eval_every=5, folds=2, seed=0), checkpoint=ckpt)
    for changed_frame, cfg, what in ((frame, CorrectConfig(steps=10, eval_every=5, folds=2, seed=0, lr=0.5),
                                      "options"),
                                     (make_frame(600, seed=6), CorrectConfig(steps=10, eval_every=5, folds=2, seed=0),
                                      "data")):
        with pytest.raises(errors.UsageError, match=f"other {what}"):
            correct(changed_frame, model, label="y", group="grp", minority=["min"], detector_config=det_cfg,
                    config=cfg, checkpoint=ckpt, resume=True)
    # fairfix run's mode: a stale checkpoint is set aside and the run trains from scratch
    _, fresh = correct(frame, model, label="y", group="grp", minority=["min"], detector_config=det_cfg,
                       config=CorrectConfig(steps=10, eval_every=5, folds=2, seed=0, lr=0.5), checkpoint=ckpt,
                       resume="if-matching")
    assert fresh["record"]["config"]["lr"] == 0.5
