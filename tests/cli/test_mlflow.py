"""``--mlflow``: audits and corrections logged to a real local MLflow store, read back with MLflow's client."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fairfix import tracking
from fairfix.artifacts import digest
from fairfix.cli import app

from .test_audit_cli import COLUMNS, csv_text, make_rows

mlflow = pytest.importorskip("mlflow")  # the mlflow extra (installed by `make test`)
runner = CliRunner()
AUDIT = ["--label", "y", "--group", "g", "--group", "sex", "--pred", "pred", "--bootstrap", "0"]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A sqlite tracking store and its artifacts under tmp_path; nothing leaves the machine."""
    monkeypatch.chdir(tmp_path)  # the default artifact root (./mlruns) lands here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    for var in ("FAIRFIX_MLFLOW", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield mlflow.tracking.MlflowClient()
    mlflow.set_tracking_uri(None)


def only_run(client: Any) -> Any:
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def preds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("mlf") / "preds.csv"
    p.write_text(csv_text(make_rows(), COLUMNS))
    return p


def test_audit_logs_summary_groups_gates_and_json(store: Any, preds: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    res = runner.invoke(app, ["audit", str(preds), *AUDIT, "--fail-on", "worst_group_accuracy<0.6",
                              "--fail-on", "accuracy<0.5", "--format", "json", "--output", str(out), "--mlflow"])
    assert res.exit_code == 1, (res.stderr, res.exception)
    doc = json.loads(out.read_text())
    run = only_run(store)
    assert "logged to MLflow run " + run.info.run_id in res.stderr
    m = run.data.metrics
    for k, v in doc["summary"].items():
        if isinstance(v, float):
            assert m[k] == pytest.approx(v), k
    for g in doc["groups"]:
        key = f"group/g:{g['group']['g']}/sex:{g['group']['sex']}"
        for metric in ("n", "accuracy", "tpr", "fpr", "selection_rate"):
            assert m[f"{key}/{metric}"] == pytest.approx(g[metric]), (key, metric)
    assert m["gate/worst_group_accuracy lt 0.6/tripped"] == 1.0
    assert m["gate/worst_group_accuracy lt 0.6/value"] == pytest.approx(doc["summary"]["worst_group_accuracy"])
    assert m["gate/accuracy lt 0.5/tripped"] == 0.0
    assert run.data.tags["fairfix.command"] == "audit" and run.data.tags["fairfix.gates_tripped"] == "1"
    assert run.data.params["label"] == "y" and json.loads(run.data.params["group_columns"]) == ["g", "sex"]
    logged = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/fairfix/audit.json")
    assert json.loads(logged) == doc


def test_a_plain_file_store_works_too(tmp_path: Path, preds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's file store (``./mlruns``; MLflow 3 asks for MLFLOW_ALLOW_FILE_STORE to use it)."""
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.chdir(tmp_path)
    for var in ("FAIRFIX_MLFLOW", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = runner.invoke(app, ["audit", str(preds), *AUDIT, "--format", "json", "--mlflow"])
    assert res.exit_code == 0, (res.stderr, res.exception)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = only_run(client)
    assert run.data.metrics["worst_group_accuracy"] == pytest.approx(
        json.loads(res.stdout)["summary"]["worst_group_accuracy"])
    assert (tmp_path / "mlruns").is_dir()


def test_env_var_turns_it_on(store: Any, preds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = runner.invoke(app, ["audit", str(preds), *AUDIT, "--format", "json"], env={"FAIRFIX_MLFLOW": "1"})
    assert res.exit_code == 0, (res.stderr, res.exception)
    run = only_run(store)
    assert run.data.metrics["accuracy"] == pytest.approx(json.loads(res.stdout)["summary"]["accuracy"])


def test_without_the_flag_nothing_is_logged(store: Any, preds: Path) -> None:
    res = runner.invoke(app, ["audit", str(preds), *AUDIT, "--format", "json"])
    assert res.exit_code == 0
    assert store.search_runs([e.experiment_id for e in store.search_experiments()]) == []


def test_missing_mlflow_is_one_line_exit_2(preds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    res = runner.invoke(app, ["audit", str(preds), *AUDIT, "--mlflow"])
    assert res.exit_code == 2
    assert res.stderr.splitlines() == [f"fairfix: error: {tracking.MLFLOW_MISSING}"]
    assert res.stdout == ""


def test_unusable_tracking_uri_is_exit_2_before_any_work(store: Any, preds: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuch://x")
    mlflow.set_tracking_uri("nosuch://x")  # as a fresh process would read it from the environment
    res = runner.invoke(app, ["audit", str(preds), *AUDIT, "--format", "json", "--mlflow", "--quiet"])
    assert res.exit_code == 2
    (line,) = res.stderr.splitlines()
    assert line.startswith("fairfix: error: --mlflow: tracking URI 'nosuch://x'"), line
    assert res.stdout == ""


def test_metric_names_are_ones_mlflow_accepts() -> None:
    assert tracking.metric_name("gate/delta.worst_group_accuracy<=-0.01") == "gate/delta.worst_group_accuracy le -0.01"
    assert tracking.metric_name("group/race:Asian,Pac=x/accuracy") == "group/race:Asian_Pac_x/accuracy"


def test_epoch_steps_from_a_record() -> None:
    record = {"loss_history": [0.5, 0.25], "correction": {"groups": "minority", "hinge_open_history": [0.4, 0.2]},
              "base_validation": {"accuracy": 0.8, "worst_group_accuracy": 0.5}, "config": {"eval_every": 50},
              "sweep": [{"steps": 50, "groups": "minority", "accuracy": 0.81, "worst_group_accuracy": 0.55,
                         "passes_guard": True, "activation_rate": 0.3},
                        {"steps": 50, "groups": "minority", "accuracy": 0.7, "worst_group_accuracy": 0.7,
                         "passes_guard": False, "activation_rate": 0.3},
                        {"steps": 100, "groups": "minority", "accuracy": 0.82, "worst_group_accuracy": 0.6,
                         "passes_guard": True, "activation_rate": 0.3},
                        {"steps": 100, "groups": "all", "accuracy": 0.9, "worst_group_accuracy": 0.9,
                         "passes_guard": True, "activation_rate": 1.0}]}
    s = tracking.epoch_steps(record)
    assert s["train/loss"] == [(50, 0.5), (100, 0.25)]  # one value per interval of eval_every steps
    assert s["train/hinge_open_share"] == [(50, 0.4), (100, 0.2)]
    assert s["val/worst_group_accuracy"] == [(0, 0.5), (50, 0.55), (100, 0.6)]  # passing rows of the chosen plan
    assert s["val/accuracy"] == [(0, 0.8), (50, 0.81), (100, 0.82)]


def make_frame(n: int, seed: int) -> pd.DataFrame:
    """As tests/correct/test_fairnet.py: the group shows in x1; the label depends on x0, shifted by group."""
    rng = np.random.default_rng(seed)
    g = rng.random(n) < 0.3
    x0, x1, x2 = rng.normal(size=n), rng.normal(size=n) + 2.0 * g, rng.normal(size=n)
    y = rng.random(n) < 1 / (1 + np.exp(-(1.5 * x0 - 0.8 * g * x2 + 0.3)))
    return pd.DataFrame({"x0": x0, "x1": x1, "x2": x2, "cat": rng.choice(["a", "b"], n),
                         "grp": np.where(g, "min", "maj"), "y": np.where(y, "yes", "no")})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ws")
    make_frame(800, seed=3).to_csv(d / "train.csv", index=False)
    make_frame(400, seed=4).to_csv(d / "test.csv", index=False)
    res = runner.invoke(app, ["train", str(d / "train.csv"), "--label", "y", "--group", "grp",
                              "--out", str(d / "model"), "--epochs", "3", "--hidden", "32,16", "--quiet"])
    assert res.exit_code == 0, res.output
    return d


def test_correct_logs_compare_epochs_and_bundle(store: Any, workspace: Path, tmp_path: Path) -> None:
    d = workspace
    bundle = tmp_path / "bundle"
    res = runner.invoke(app, ["correct", str(d / "train.csv"), "--model", str(d / "model"), "--label", "y",
                              "--group", "grp", "--minority", "min", "--steps", "20", "--eval-every", "10",
                              "--folds", "2", "--eval", str(d / "test.csv"),
                              "--out", str(bundle), "--format", "json", "--mlflow", "--quiet"])
    assert res.exit_code == 0, (res.stderr, res.exception)
    doc = json.loads(res.stdout)
    manifest = json.loads((bundle / "fairfix.json").read_text())
    run = only_run(store)
    m = run.data.metrics
    for k in ("accuracy", "worst_group_accuracy"):
        assert m[f"before.{k}"] == pytest.approx(doc["before"]["summary"][k])
        assert m[f"after.{k}"] == pytest.approx(doc["after"]["summary"][k])
        assert m[f"delta.{k}"] == pytest.approx(doc["delta"][k])
    assert m["detector.tpr"] == pytest.approx(doc["detector"]["tpr"])
    loss = store.get_metric_history(run.info.run_id, "train/loss")
    loss = sorted(loss, key=lambda p: p.step)
    assert [p.step for p in loss] == [10, 20][: len(manifest["loss_history"])]
    assert [p.value for p in loss] == pytest.approx(manifest["loss_history"])
    assert len(manifest["loss_history"]) in (1, 2)  # the shipped adapter's intervals (its budget: 10 or 20)
    hinge = store.get_metric_history(run.info.run_id, "train/hinge_open_share")
    assert [p.value for p in sorted(hinge, key=lambda p: p.step)] == pytest.approx(
        manifest["correction"]["hinge_open_history"])
    val = store.get_metric_history(run.info.run_id, "val/worst_group_accuracy")
    assert sorted(p.step for p in val) == [0, 10, 20]
    assert min(val, key=lambda p: p.step).value == pytest.approx(doc["base_validation"]["worst_group_accuracy"])
    assert run.data.params["correct.steps"] == "20"
    files = {a.path for a in store.list_artifacts(run.info.run_id, "bundle")}
    assert "bundle/fairfix.json" in files and "bundle/compare.json" in files
    assert json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/fairfix/compare.json")) == doc


RECIPE = """\
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
correct: {epochs: 2}
audit:
  bootstrap: 50
  fail_on: ["worst_group_accuracy<0.01"]
compare:
  fail_on: ["delta.accuracy<5", "after.accuracy<0.01"]
"""


def test_correct_of_two_attributes_logs_each_attributes_series(store: Any, workspace: Path,
                                                                tmp_path: Path) -> None:
    d = workspace
    frame = pd.read_csv(d / "train.csv")
    frame["h"] = np.where(np.random.default_rng(5).random(len(frame)) < 0.4, "p", "q")
    frame.to_csv(tmp_path / "train2.csv", index=False)
    bundle = tmp_path / "bundle2"
    res = runner.invoke(app, ["correct", str(tmp_path / "train2.csv"), "--model", str(d / "model"), "--label", "y",
                              "--group", "grp", "--group", "h", "--minority", "grp=min", "--steps", "20",
                              "--eval-every", "10", "--folds", "2",
                              "--out", str(bundle), "--format", "json", "--mlflow", "--quiet"])
    assert res.exit_code == 0, (res.stderr, res.exception)
    doc = json.loads(res.stdout)
    run = only_run(store)
    m = run.data.metrics
    assert m["after.worst_group_accuracy"] == pytest.approx(doc["after"]["summary"]["worst_group_accuracy"])
    for a in doc["attributes"]:
        g = a["group"]
        assert m[f"{g}/after.worst_group_accuracy"] == pytest.approx(a["after"]["worst_group_accuracy"])
        assert m[f"{g}/delta.accuracy"] == pytest.approx(a["delta"]["accuracy"])
        loss = sorted(store.get_metric_history(run.info.run_id, f"{g}/train/loss"), key=lambda p: p.step)
        assert [p.step for p in loss] in ([10], [10, 20])  # per interval of --eval-every steps
        val = store.get_metric_history(run.info.run_id, f"{g}/val/accuracy")
        assert min(val, key=lambda p: p.step).value == pytest.approx(a["base_validation"]["accuracy"])
    assert run.data.params["correct.h/steps"] == "20"
    files = {x.path for x in store.list_artifacts(run.info.run_id, "bundle")}
    assert "bundle/fairfix.json" in files
    # the MLflow model of a bundle of two attributes: a risk and a flag per attribute, as fairfix predict
    got = mlflow.pyfunc.load_model(run.data.tags["fairfix.model_uri"]).predict(frame.head(50))
    pred = tmp_path / "p.csv"
    frame.head(50).to_csv(tmp_path / "rows.csv", index=False)
    res = runner.invoke(app, ["predict", str(tmp_path / "rows.csv"), "--model", str(bundle), "--output", str(pred)])
    assert res.exit_code == 0, res.output
    want = pd.read_csv(pred)
    assert list(got.columns) == [c for c in want.columns if c != "row"] == [
        "score", "pred", "corrected", "risk_grp", "corrected_grp", "risk_h", "corrected_h"]
    np.testing.assert_allclose(got["score"], want["score"], atol=1e-12, rtol=0)
    assert (got["corrected_h"].to_numpy() == want["corrected_h"].to_numpy()).all()


def test_run_logs_to_mlflow_writes_junit_and_one_line_per_stage(store: Any, tmp_path: Path) -> None:
    xmlschema = pytest.importorskip("xmlschema")
    recipe = tmp_path / "small.yaml"
    recipe.write_text(RECIPE)
    out, junit = tmp_path / "run", tmp_path / "junit.xml"
    res = runner.invoke(app, ["run", str(recipe), "--out", str(out), "--format", "json", "--junit", str(junit),
                              "--mlflow"])
    assert res.exit_code == 1, (res.stderr, res.exception)  # delta.accuracy<5 trips
    doc = json.loads(res.stdout)
    # progress off a terminal: one plain line per stage, no cursor codes
    assert "\x1b[" not in res.stderr
    lines = res.stderr.splitlines()
    for stage in ("train", "detector", "adapter"):
        assert sum(ln.startswith(f"fairfix: {stage}: ") and ln.endswith(" s)") for ln in lines) == 1, (stage, lines)
    # JUnit: a suite for the audit's gates and one for the comparison's
    xmlschema.XMLSchema(str(Path(__file__).resolve().parents[1] / "report" / "junit-10.xsd")).validate(str(junit))
    import xml.etree.ElementTree as ET

    suites = {s.get("name"): s for s in ET.parse(junit).getroot().iter("testsuite")}
    assert set(suites) == {"fairfix run audit_after", "fairfix run compare"}
    cmp_cases = {c.get("name"): c for c in suites["fairfix run compare"].iter("testcase")}
    assert cmp_cases["delta.accuracy<5"].find("failure") is not None
    assert cmp_cases["after.accuracy<0.01"].find("failure") is None
    # MLflow: the comparison's figures, the audit gate, the reports and the bundle
    run = only_run(store)
    m = run.data.metrics
    assert m["after.worst_group_accuracy"] == pytest.approx(doc["after"]["summary"]["worst_group_accuracy"])
    assert m["gate/delta.accuracy lt 5/tripped"] == 1.0
    (audit_gate,) = json.loads((out / "audit_after.json").read_text())["gates"]
    assert m["gate/worst_group_accuracy lt 0.01/tripped"] == float(audit_gate["tripped"])
    audit_case = next(suites["fairfix run audit_after"].iter("testcase"))
    assert (audit_case.find("failure") is not None) == audit_gate["tripped"]
    arts = {a.path for a in store.list_artifacts(run.info.run_id, "fairfix")}
    assert {"fairfix/compare.json", "fairfix/audit_before.json", "fairfix/audit_after.json"} <= arts
    assert "bundle/fairfix.json" in {a.path for a in store.list_artifacts(run.info.run_id, "bundle")}
    manifest = json.loads((out / "bundle" / "fairfix.json").read_text())
    loss = store.get_metric_history(run.info.run_id, "train/loss")
    assert [p.value for p in sorted(loss, key=lambda p: p.step)] == pytest.approx(manifest["loss_history"])
    # the bundle as an MLflow model, its example read from data.train (Adult's integer columns stay integers)
    uri = run.data.tags["fairfix.model_uri"]
    info = mlflow.models.get_model_info(uri)
    assert info.flavors["python_function"]["loader_module"] == "fairfix.mlflow"
    assert info.flavors["fairfix"]["digest"] == digest(manifest)
    assert {c.name: c.type.name for c in info.signature.inputs}["age"] == "long"
