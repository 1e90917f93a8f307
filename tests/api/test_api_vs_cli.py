"""The Python API gives what the CLI prints: train, detect, correct, audit, compare, predict on the same inputs.

Data: 1,200 training and 600 test rows of the embedded Adult data; models of 150 steps and
corrections of 40 steps on 2 folds (seconds each, CPU, bit for bit repeatable).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import fairfix
from fairfix.cli import app
from fairfix.datasets import load_adult

TRAIN = ["--steps", "150", "--hidden", "32,16", "--seed", "0"]
CORRECT = ["--steps", "40", "--eval-every", "20", "--folds", "2", "--seed", "0"]


def cli(*args):
    env = {"FAIRFIX_DEBUG": "", "NO_COLOR": "1", "FAIRFIX_NO_PROGRESS": "1"}
    res = CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    load_adult("train").sample(1200, random_state=2).to_csv(d / "train.csv", index=False)
    load_adult("test").sample(600, random_state=2).to_csv(d / "test.csv", index=False)
    res = cli("train", d / "train.csv", "--label", "income", "--group", "sex", "--out", d / "cli_model", *TRAIN,
              "--format", "json")
    return {"dir": d, "train_json": json.loads(res.stdout), "train_text": res.stdout}


def test_train_summary_and_weights_equal_the_cli(ws):
    d = ws["dir"]
    model = fairfix.train(str(d / "train.csv"), label="income", group=["sex"], steps=150, hidden=[32, 16], seed=0)
    unsaved = model.to_dict()
    assert unsaved["model"] is None and unsaved["files"] == {}
    model.save(d / "api_model")
    got = model.to_dict()
    assert got == {**ws["train_json"], "model": str(d / "api_model")}
    assert got["files"] == ws["train_json"]["files"]  # same sha256 of the weights: the same training
    assert model.to_json() == ws["train_text"].replace(str(d / "cli_model"), str(d / "api_model"))
    assert fairfix.load(d / "api_model").model.digest == fairfix.load(d / "cli_model").model.digest


def test_audit_and_predict_equal_the_cli(ws):
    d = ws["dir"]
    res = cli("audit", d / "test.csv", "--model", d / "cli_model", "--label", "income", "--group", "sex",
              "--group", "race", "--bootstrap", "50", "--format", "json")
    model = fairfix.load(d / "cli_model")
    report = model.audit(str(d / "test.csv"), label="income", group=["sex", "race"], bootstrap=50)
    assert report.to_json() == res.stdout
    cli("predict", d / "test.csv", "--model", d / "cli_model", "-o", d / "pred.csv", "--keep", "income",
        "--keep", "sex")
    got = model.predict(str(d / "test.csv"), keep=["income", "sex"])
    want = pd.read_csv(d / "pred.csv")
    assert list(got.columns) == list(want.columns) == ["row", "income", "sex", "score", "pred"]
    assert (got[["row", "income", "sex", "pred"]].to_numpy() == want[["row", "income", "sex", "pred"]].to_numpy()).all()
    assert np.allclose(got["score"], want["score"], rtol=0, atol=1e-12)
    assert np.allclose(model.predict_proba(str(d / "test.csv"))[:, 1], got["score"], rtol=0, atol=0)


def test_detect_equals_the_cli_and_round_trips(ws):
    d = ws["dir"]
    res = cli("detect", d / "train.csv", "--model", d / "cli_model", "--group", "sex", "--label", "income",
              "--epochs", "10", "--out", d / "cli_det", "--format", "json")
    model = fairfix.load(d / "cli_model")
    det = model.detect(str(d / "train.csv"), group="sex", label="income", epochs=10)
    assert det.to_json() == res.stdout
    assert det.to_dict() == json.loads(res.stdout)
    det.save(d / "api_det")
    back = fairfix.Detector.load(d / "api_det", model)
    assert back.to_dict() == det.to_dict()
    mine, theirs = det.module.state_dict(), back.module.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_correct_equals_the_cli_and_the_bundle_round_trips(ws):
    d = ws["dir"]
    res = cli("correct", d / "train.csv", "--model", d / "cli_model", "--label", "income", "--group", "sex",
              *CORRECT, "--eval", d / "test.csv", "--out", d / "cli_bundle", "--format", "json")
    model = fairfix.load(d / "cli_model")
    bundle = model.correct(str(d / "train.csv"), label="income", group="sex", steps=40, eval_every=20, folds=2,
                           eval_data=str(d / "test.csv"))
    assert bundle.to_json() == res.stdout
    assert bundle.to_dict()["schema"] == "fairfix.compare/1"
    bundle.save(d / "api_bundle")
    back = fairfix.load(d / "api_bundle")
    assert isinstance(back, fairfix.Bundle) and back.to_dict() == bundle.to_dict()
    cli_bundle = fairfix.load(d / "cli_bundle")
    test = str(d / "test.csv")
    assert np.array_equal(back.predict_proba(test), cli_bundle.predict_proba(test))
    frame = back.predict(test)
    assert list(frame.columns) == ["row", "score", "pred", "risk", "corrected"]
    # the bundle's base is the model on disk (referred to by path, not copied)
    manifest = json.loads((d / "api_bundle" / "fairfix.json").read_text())
    assert manifest["base_model"]["path"] == str(d / "cli_model") and not (d / "api_bundle" / "base").exists()


def test_compare_equals_the_cli(ws):
    d = ws["dir"]
    model = fairfix.load(d / "cli_model")
    before = model.audit(str(d / "test.csv"), label="income", group="sex", bootstrap=0)
    after = fairfix.load(d / "cli_bundle").audit(str(d / "test.csv"), label="income", group="sex", bootstrap=0)
    (d / "before.json").write_text(before.to_json())
    (d / "after.json").write_text(after.to_json())
    gate = "delta.worst_group_accuracy<-1"
    res = cli("compare", d / "before.json", d / "after.json", "--fail-on", gate, "--format", "json")
    for a, b in ((before, after), (d / "before.json", d / "after.json"), (before.to_dict(), after.to_dict())):
        cmp = fairfix.compare(a, b, fail_on=[gate])
        assert cmp.to_json() == res.stdout and not cmp.tripped


def test_a_model_trained_in_memory_travels_inside_its_bundle(ws, tmp_path):
    """A base that was never saved is written into the bundle (base/); the CLI loads the bundle alone."""
    d = ws["dir"]
    model = fairfix.train(str(d / "train.csv"), label="income", group="sex", steps=150, hidden=[32, 16], seed=0)
    bundle = model.correct(str(d / "train.csv"), label="income", group="sex", steps=40, eval_every=20, folds=2)
    bundle.save(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "fairfix.json").read_text())
    assert manifest["base_model"]["embedded"] is True and "base/model.safetensors" in manifest["files"]
    cli("predict", d / "test.csv", "--model", tmp_path / "b", "-o", tmp_path / "p.parquet")
    want = pd.read_parquet(tmp_path / "p.parquet")
    got = bundle.predict(str(d / "test.csv"))
    assert np.array_equal(got["score"].to_numpy(), want["score"].to_numpy())
    assert (got["corrected"] == want["corrected"]).all()
    # a changed embedded base is refused: the bundle's manifest hashes it
    (tmp_path / "b" / "base" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(fairfix.FairfixError, match="sha256"):
        fairfix.load(tmp_path / "b")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8),
                                        torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


NUMERIC = ["age", "education-num", "hours-per-week", "capital-gain"]


def test_a_torch_module_in_memory_where_a_factory_goes(ws, tmp_path):
    d = ws["dir"]
    torch.manual_seed(0)
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = fairfix.train(str(d / "train.csv"), label="income", features=NUMERIC, factory=net, steps=60, seed=0)
    assert model.to_dict()["kind"] == "factory"
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the caller's module: untouched
    trained = model.model.module
    wrapped = fairfix.Model.from_module(trained, features=NUMERIC, classes=["<=50K", ">50K"])
    test = str(d / "test.csv")
    assert np.array_equal(wrapped.predict_proba(test), model.predict_proba(test))
    bundle = wrapped.correct(str(d / "train.csv"), label="income", group="sex", steps=20, eval_every=10, folds=2)
    assert not any("lora" in n for n, _ in trained.named_modules())  # LoRA went into a copy
    bundle.save(tmp_path / "b")
    back = fairfix.load(tmp_path / "b", factory=Net())  # the module's code is named by the caller, never the artifact
    assert np.array_equal(back.predict_proba(test), bundle.predict_proba(test))
    with pytest.raises(fairfix.FairfixError, match="not a fairfix built-in"):
        fairfix.load(tmp_path / "b")
    model.save(tmp_path / "m")
    assert np.array_equal(fairfix.load(tmp_path / "m", factory=Net()).predict_proba(test), model.predict_proba(test))
