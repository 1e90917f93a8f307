"""MLflow models: a bundle logged with ``fairfix.mlflow.log_model`` / ``--mlflow``, read back with MLflow's own API.

The oracle is ``fairfix predict`` of the same rows with the same bundle: ``mlflow.pyfunc``,
``spark_udf`` and ``mlflow models serve`` must give its columns with its values.  The store is
MLflow's file store under tmp_path; the served model listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fairfix import errors

from .bundles import arm, build, predict_cli, rehash, runner

mlflow = pytest.importorskip("mlflow")  # the mlflow extra (installed by `make test`)
INPUTS = ["age", "education-num", "hours-per-week", "workclass", "occupation"]
OUT = ["score", "pred", "risk", "corrected"]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tabular model corrected on 400 Adult rows, its adapter switched on per row (gate detector)."""
    root = build(tmp_path_factory.mktemp("mlflow-model"))
    arm(root / "bundle", gate="detector", tau=0.5)
    return root


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """MLflow's file store under tmp_path (tracking URI file:...); nothing leaves the machine."""
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.chdir(tmp_path)
    for k, v in {"MLFLOW_TRACKING_URI": uri, "MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
                 "DO_NOT_TRACK": "1"}.items():
        monkeypatch.setenv(k, v)
    for var in ("FAIRFIX_MLFLOW", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    mlflow.set_tracking_uri(uri)
    yield mlflow.tracking.MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(None)


def _logged(made: Path, **kw: Any) -> Any:
    import fairfix.mlflow

    with mlflow.start_run() as run:
        info = fairfix.mlflow.log_model(made / "bundle", input_example=str(made / "adult.csv"), **kw)
    return run, info


def _local_dir(uri: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(uri))


def test_log_model_round_trip_gives_fairfix_predicts_columns(made: Path, store: Any, tmp_path: Path) -> None:
    run, info = _logged(made)
    uri = f"runs:/{run.info.run_id}/model"
    loaded = mlflow.pyfunc.load_model(uri)
    rows = pd.read_csv(made / "rows.csv")  # every column: those the model does not read are left aside
    got = loaded.predict(rows)
    want = predict_cli(made / "bundle", made / "rows.csv", tmp_path / "p.parquet")
    assert list(got.columns) == OUT and list(want.columns) == ["row", *OUT]
    pd.testing.assert_frame_equal(got, want[OUT], check_exact=True, check_dtype=False)
    assert 0 < want["corrected"].mean() < 1  # the adapter is on for some rows, off for others
    # the threshold is a parameter of the model, as --threshold of `fairfix predict`
    got = loaded.predict(rows, params={"threshold": 0.3})
    want = predict_cli(made / "bundle", made / "rows.csv", tmp_path / "p3.parquet", "--threshold", "0.3")
    pd.testing.assert_frame_equal(got, want[OUT], check_exact=True, check_dtype=False)
    # what MLflow recorded: the signature, the example, the flavours; nothing pickled
    meta = loaded.metadata
    assert meta.get_input_schema().input_names() == INPUTS
    assert meta.get_output_schema().input_names() == OUT
    assert meta.get_params_schema().params[0].name == "threshold"
    assert meta.get_params_schema().params[0].default == 0.5
    local = _local_dir(uri)
    pyfunc = meta.flavors["python_function"]
    assert pyfunc["loader_module"] == "fairfix.mlflow" and "python_model" not in pyfunc
    flavour = meta.flavors["fairfix"]
    manifest = json.loads((made / "bundle" / "fairfix.json").read_text())
    from fairfix.artifacts import digest

    assert flavour["digest"] == digest(manifest)
    example = json.loads((local / "input_example.json").read_text())
    assert example["columns"] == INPUTS and len(example["data"]) == 5
    files = [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle", ".py", ".bin", ".pt"))], files
    assert f"{pyfunc['data']}/model/fairfix.json" in files and f"{pyfunc['data']}/base/fairfix.json" in files
    assert loaded.predict(rows.head(0)).empty


def test_default_example_needs_no_data(made: Path, store: Any) -> None:
    import fairfix.mlflow

    with mlflow.start_run():
        info = fairfix.mlflow.log_model(made / "bundle", name="m2")
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    schema = {c.name: c.type.name for c in loaded.metadata.get_input_schema().inputs}
    assert list(schema) == INPUTS and schema["age"] == "double" and schema["workclass"] == "string"
    rows = pd.read_csv(made / "rows.csv").astype({"age": float, "education-num": float, "hours-per-week": float})
    assert list(loaded.predict(rows).columns) == OUT


def test_a_tampered_logged_bundle_fails_to_load(made: Path, store: Any, tmp_path: Path) -> None:
    _, info = _logged(made)
    local = tmp_path / "copy"
    shutil.copytree(_local_dir(info.model_uri), local)
    mlflow.pyfunc.load_model(str(local))  # the untouched copy loads
    data = local / mlflow.models.Model.load(str(local)).flavors["python_function"]["data"]
    detector = data / "model" / "detector" / "detector.safetensors"
    blob = bytearray(detector.read_bytes())
    blob[-1] ^= 1
    detector.write_bytes(bytes(blob))
    with pytest.raises(errors.ModelError, match=r"detector\.safetensors: sha256 differs from fairfix\.json"):
        mlflow.pyfunc.load_model(str(local))
    # the manifests re-hashed after the edit: the bundle's identity is no longer the one MLmodel records
    rehash(data / "model" / "detector")
    rehash(data / "model")
    with pytest.raises(errors.ModelError, match=r"the logged model has sha256 .* MLmodel records .* refusing"):
        mlflow.pyfunc.load_model(str(local))
    # a base model swapped for another one is refused by the bundle's own record of its base
    shutil.copytree(_local_dir(info.model_uri), tmp_path / "copy2")
    base = tmp_path / "copy2" / data.relative_to(local) / "base" / "model.safetensors"
    blob = bytearray(base.read_bytes())
    blob[-1] ^= 1
    base.write_bytes(bytes(blob))
    with pytest.raises(errors.ModelError, match=r"model\.safetensors: sha256 differs"):
        mlflow.pyfunc.load_model(str(tmp_path / "copy2"))


def test_correct_mlflow_logs_the_bundle_as_a_model(made: Path, store: Any, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    res = runner.invoke(app_cli(), ["correct", str(made / "adult.csv"), "--model", str(made / "model"), "--label",
                                    "income", "--group", "sex", "--steps", "10", "--eval-every", "10", "--folds", "2",
                                    "--out", str(bundle), "--quiet", "--format", "json", "--mlflow"])
    assert res.exit_code == 0, (res.stderr, res.exception)
    (run,) = store.search_runs([e.experiment_id for e in store.search_experiments()])
    uri = run.data.tags["fairfix.model_uri"]
    assert f"the bundle as the MLflow model {uri}" in res.stderr
    got = mlflow.pyfunc.load_model(uri).predict(pd.read_csv(made / "rows.csv"))
    want = predict_cli(bundle, made / "rows.csv", tmp_path / "p.parquet")
    pd.testing.assert_frame_equal(got, want[OUT], check_exact=True, check_dtype=False)
    assert {c.name: c.type.name for c in mlflow.models.get_model_info(uri).signature.inputs}["age"] == "long"


def app_cli() -> Any:
    from fairfix.cli import app

    return app


# -- spark_udf and mlflow models serve ------------------------------------------------------------


@pytest.mark.spark
def test_spark_udf_scores_a_dataframe_with_the_same_values(made: Path, store: Any, tmp_path: Path) -> None:
    from pyspark.sql import SparkSession

    _, info = _logged(made)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers run this venv's Python
    spark = (SparkSession.builder.master("local[2]").appName("fairfix-mlflow")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    try:
        spark.sparkContext.setLogLevel("ERROR")
        rows = pd.read_csv(made / "rows.csv").head(120)
        udf = mlflow.pyfunc.spark_udf(spark, info.model_uri, env_manager="local")
        sdf = spark.createDataFrame(rows.reset_index().rename(columns={"index": "row"})).repartition(2)
        got = (sdf.select("row", udf(*[sdf[c] for c in INPUTS]).alias("p")).select("row", "p.*")
               .toPandas().sort_values("row").reset_index(drop=True))
    finally:
        spark.stop()
    rows.to_csv(tmp_path / "rows.csv", index=False)
    want = predict_cli(made / "bundle", tmp_path / "rows.csv", tmp_path / "p.parquet")
    assert list(got.columns) == ["row", *OUT]
    pd.testing.assert_frame_equal(got[["row", "pred", "corrected"]], want[["row", "pred", "corrected"]],
                                  check_dtype=False)
    # other batches than the local run's: the same labels and flags, the scores within float rounding
    pd.testing.assert_frame_equal(got[["score", "risk"]], want[["score", "risk"]], check_exact=False,
                                  atol=1e-6, rtol=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_models_serve_answers_on_loopback(made: Path, store: Any, tmp_path: Path) -> None:
    _, info = _logged(made)
    local = _local_dir(info.model_uri)
    port = _free_port()
    bindir = str(Path(sys.executable).parent)  # mlflow and the uvicorn it runs, from this venv
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([os.path.join(bindir, "mlflow"), "models", "serve", "-m", str(local), "--env-manager",
                             "local", "-h", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /ping in 240 s"
            time.sleep(0.5)
        rows = pd.read_csv(made / "rows.csv").head(25)
        body = {"dataframe_split": rows[INPUTS].to_dict(orient="split"), "params": {"threshold": 0.4}}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            got = pd.DataFrame(json.loads(r.read())["predictions"])
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        log.close()
    rows.to_csv(tmp_path / "rows.csv", index=False)
    want = predict_cli(made / "bundle", tmp_path / "rows.csv", tmp_path / "p.parquet", "--threshold", "0.4")
    assert list(got.columns) == OUT
    pd.testing.assert_frame_equal(got, want[OUT], check_dtype=False, check_exact=False, atol=1e-12, rtol=0)
