"""``fairfix.spark.audit``, ``fairfix audit --engine spark`` and ``fairfix.spark.predict`` on ``local[2]``.

The oracle is the local audit of the same rows: the JSON must be identical (for
files, ``settings.source`` included); for scoring, ``fairfix predict`` of the
same rows.  Marked ``spark``: they need pyspark and Java 17, which ``make``
installs; skip them locally with ``-m "not spark"`` (CI runs them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import fairfix
from fairfix import errors
from fairfix.cli import app

pytestmark = pytest.mark.spark
runner = CliRunner()
GROUPS = ["sex", "race"]
KW: dict[str, Any] = {"bootstrap": 200, "seed": 4, "min_group_size": 40,
                      "fail_on": ["tpr_gap>0.99", "worst_group_accuracy<0.3"]}


@pytest.fixture(scope="module")
def spark() -> Any:
    import os

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers run this venv's Python
    s = (SparkSession.builder.master("local[2]").appName("fairfix-tests")
         .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
         .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def frame(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sex = rng.choice(["F", "M"], n)
    return pd.DataFrame({
        "sex": sex,
        "race": rng.choice(["a", "b", "c"], n, p=[0.6, 0.35, 0.05]),
        "y": y,
        "p": np.where(rng.random(n) < 0.75, y, 1 - y),
        "s": np.round(np.clip(rng.random(n) * 0.6 + 0.4 * y * (sex == "F"), 0, 1), 3),
    })


def same(a: Any, b: Any, drop: tuple[str, ...] = ("source",)) -> None:
    da, db = json.loads(json.dumps(a.to_dict() if hasattr(a, "to_dict") else a)), \
        json.loads(json.dumps(b.to_dict() if hasattr(b, "to_dict") else b))
    for d in (da, db):
        for k in drop:
            d["settings"].pop(k, None)
    assert json.dumps(da, sort_keys=True) == json.dumps(db, sort_keys=True)


@pytest.mark.parametrize("mode", [{"pred": "p"}, {"score": "s", "threshold": 0.55}])
def test_spark_audit_of_a_dataframe_equals_the_local_audit(spark: Any, mode: dict[str, Any]) -> None:
    df = frame()
    local = fairfix.audit(df, label="y", group=GROUPS, **mode, **KW)
    remote = fairfix.spark.audit(spark.createDataFrame(df), label="y", group=GROUPS, **mode, **KW)
    same(remote, local)
    assert remote.settings["source"] == "<Spark DataFrame>"
    assert any(g.insufficient_evidence for g in remote.gates) and remote.small_groups


def test_engine_spark_on_directories_gives_the_local_json(spark: Any, tmp_path: Path) -> None:
    df = frame()
    for ext in ("parquet", "csv", "jsonl"):
        folder = tmp_path / ext
        folder.mkdir()
        for i, part in enumerate([df.iloc[:700], df.iloc[700:]]):
            path = folder / f"part-{i}.{ext}"
            if ext == "parquet":
                part.to_parquet(path, index=False)
            elif ext == "csv":
                part.to_csv(path, index=False)
            else:
                part.to_json(path, orient="records", lines=True)
        (folder / "_SUCCESS").write_text("")
        for mode in (["--pred", "p"], ["--score", "s"]):
            args = ["audit", str(folder), "--label", "y", *mode, "--group", "sex", "--group", "race",
                    "--format", "json", "--bootstrap", "100"]
            local = runner.invoke(app, [*args, "--engine", "arrow"])
            remote = runner.invoke(app, [*args, "--engine", "spark"])
            assert local.exit_code == remote.exit_code == 0, (remote.stderr, remote.exception)
            assert json.loads(remote.stdout) == json.loads(local.stdout), (ext, mode)


def test_spark_group_by_count_is_a_counts_table(spark: Any) -> None:
    """What docs/scale.md says: df.groupBy(...).count() audits with counts="count"."""
    df = frame()
    sdf = spark.createDataFrame(df)
    counted = sdf.groupBy("sex", "race", "y", "p").count()
    local = fairfix.audit(df, label="y", pred="p", group=GROUPS, **KW)
    on_spark = fairfix.spark.audit(counted, label="y", pred="p", group=GROUPS, counts="count", **KW)
    same(on_spark, local, drop=("source", "counts_column"))
    collected = fairfix.audit(counted.toPandas(), label="y", pred="p", group=GROUPS, counts="count", **KW)
    same(collected, local, drop=("source", "counts_column"))


def test_spark_errors_are_one_line(spark: Any) -> None:
    df = frame()
    bad = df.assign(n=1)
    bad.loc[3, "n"] = -1
    with pytest.raises(errors.DataError, match=r"count column 'n' has a negative value \(-1\)"):
        fairfix.spark.audit(spark.createDataFrame(bad), label="y", pred="p", group=GROUPS, counts="n")
    with pytest.raises(errors.DataError, match="no column 'q'"):
        fairfix.spark.audit(spark.createDataFrame(df), label="y", pred="q", group=GROUPS)
    out = df.assign(s=df["s"].astype(float))
    out.loc[5, "s"] = 1.5
    with pytest.raises(errors.DataError, match=r"score column 's' has 1 value\(s\) outside \[0, 1\]"):
        fairfix.spark.audit(spark.createDataFrame(out), label="y", score="s", group=GROUPS)
    with pytest.raises(errors.UsageError, match="--engine arrow"):
        fairfix.audit(spark.createDataFrame(df), label="y", pred="p", group=GROUPS, engine="arrow")


# -- fairfix.spark.predict ------------------------------------------------------------


def _scoring_frame(n: int, seed: int, classes: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    grp = np.where(rng.random(n) < 0.3, "min", "maj")
    x = rng.normal(size=(n, 3))
    z = x[:, 0] + np.where(grp == "min", -0.8, 0.4) * x[:, 1]
    y = np.digitize(z, [-0.5, 0.5]) if classes == 3 else (z > 0).astype(int)
    labels = np.asarray(["lo", "mid", "hi"])[y] if classes == 3 else y
    return pd.DataFrame({"id": np.arange(n, dtype=np.int64) * 7, "x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2],
                         "colour": rng.choice(["red", "green", "blue"], n), "grp": grp,
                         "h": rng.choice(["p", "q"], n, p=[0.35, 0.65]), "y": labels})


@pytest.fixture(scope="module")
def scored_models(tmp_path_factory: Any) -> Path:
    """A binary model, its FairNet bundle, a two-attribute bundle and a three-class model, made with the CLI."""
    d = tmp_path_factory.mktemp("spark-predict")
    _scoring_frame(1200, 0).to_csv(d / "train.csv", index=False)
    _scoring_frame(900, 1, classes=3).to_csv(d / "train3.csv", index=False)
    _scoring_frame(20_000, 2).to_parquet(d / "rows.parquet", index=False)
    _scoring_frame(5_000, 3, classes=3).to_parquet(d / "rows3.parquet", index=False)
    for data, out in (("train.csv", "model"), ("train3.csv", "model3")):
        res = runner.invoke(app, ["train", str(d / data), "--label", "y", "--group", "grp", "--features",
                                  "x0,x1,x2,colour", "--out", str(d / out), "--epochs", "3", "--hidden", "16,8"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["correct", str(d / "train.csv"), "--model", str(d / "model"), "--label", "y",
                              "--group", "grp", "--minority", "min", "--epochs", "2", "--out", str(d / "bundle")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["correct", str(d / "train.csv"), "--model", str(d / "model"), "--label", "y",
                              "--group", "grp", "--group", "h", "--minority", "grp=min", "--epochs", "2",
                              "--out", str(d / "bundle2")])
    assert res.exit_code == 0, res.output
    return d


def _local(d: Path, model: str, rows: str, tmp: Path, *extra: str) -> pd.DataFrame:
    out = tmp / f"{model}-{rows}.parquet"
    res = runner.invoke(app, ["predict", str(d / rows), "--model", str(d / model), "--id", "id",
                              "--output", str(out), "--force", *extra])
    assert res.exit_code == 0, res.output
    return pd.read_parquet(out)


def _remote(spark: Any, d: Path, model: str, rows: str, partitions: int, **kw: Any) -> pd.DataFrame:
    sdf = spark.read.parquet(str(d / rows))
    sdf = sdf.coalesce(1) if partitions == 1 else sdf.repartition(partitions)
    out = fairfix.spark.predict(sdf, str(d / model), id_column="id", **kw).toPandas()
    return out.sort_values("id").reset_index(drop=True)


@pytest.mark.parametrize(("model", "rows"), [("model", "rows.parquet"), ("bundle", "rows.parquet"),
                                             ("bundle2", "rows.parquet"), ("model3", "rows3.parquet")])
def test_spark_predict_gives_fairfix_predicts_rows(spark: Any, scored_models: Path, tmp_path: Path,
                                                   model: str, rows: str) -> None:
    local = _local(scored_models, model, rows, tmp_path)
    one = _remote(spark, scored_models, model, rows, 1)
    # One partition in file order: the local batches, so the local bytes.
    assert list(one.columns) == list(local.columns)
    pd.testing.assert_frame_equal(one, local, check_exact=True)
    if model == "bundle":
        assert one["corrected"].dtype == bool and one["risk"].nunique() > 100
    if model == "bundle2":  # one risk and one flag per attribute, and whether any adapter was on
        assert ["corrected", "risk_grp", "corrected_grp", "risk_h", "corrected_h"] == list(one.columns[-5:])
    if model == "model3":
        assert [c for c in one.columns if c.startswith("score_")] == ["score_hi", "score_lo", "score_mid"]
    # Shuffled over three partitions: other batches, the same labels and flags, scores within 1e-6.
    many = _remote(spark, scored_models, model, rows, 3)
    exact = ["id", "pred", *[c for c in local.columns if c.startswith("corrected")]]
    pd.testing.assert_frame_equal(many[exact], local[exact], check_exact=True)
    floats = [c for c in local.columns if c not in exact]
    np.testing.assert_allclose(many[floats].to_numpy(), local[floats].to_numpy(), rtol=0, atol=1e-6)


def test_spark_predict_threshold_and_kept_columns(spark: Any, scored_models: Path, tmp_path: Path) -> None:
    local = _local(scored_models, "model", "rows.parquet", tmp_path, "--threshold", "0.7")
    remote = _remote(spark, scored_models, "model", "rows.parquet", 1, threshold=0.7)
    pd.testing.assert_frame_equal(remote, local, check_exact=True)
    assert (local["pred"] == (local["score"] >= 0.7).astype(int)).all()
    # Batches of 1,000 rows re-cut from Spark's Arrow batches: the local run with --batch-size 1000.
    local = _local(scored_models, "bundle", "rows.parquet", tmp_path, "--batch-size", "1000")
    remote = _remote(spark, scored_models, "bundle", "rows.parquet", 1, batch_rows=1000)
    pd.testing.assert_frame_equal(remote, local, check_exact=True)
    # Without id_column every input column is kept, then the prediction columns.
    from fairfix.models import load_model

    loaded = load_model(scored_models / "model")  # a loaded model ships from its path
    sdf = spark.read.parquet(str(scored_models / "rows.parquet"))
    out = fairfix.spark.predict(sdf, loaded)
    assert out.columns == [*sdf.columns, "score", "pred"]
    assert out.count() == 20_000


def test_spark_predict_bad_input_is_one_clear_error(spark: Any, scored_models: Path) -> None:
    d = scored_models
    sdf = spark.read.parquet(str(d / "rows.parquet"))
    with pytest.raises(errors.DataError, match=r"<Spark DataFrame>: no column 'colour'"):
        fairfix.spark.predict(sdf.drop("colour"), str(d / "model"))
    with pytest.raises(errors.DataError, match=r"no column 'key'"):
        fairfix.spark.predict(sdf, str(d / "model"), id_column="key")
    with pytest.raises(errors.UsageError, match=r"has a column 'pred', which fairfix.spark.predict writes"):
        fairfix.spark.predict(sdf.withColumnRenamed("y", "pred"), str(d / "model"))
    with pytest.raises(errors.UsageError, match=r"--threshold applies to a binary model; .* has 3 classes"):
        fairfix.spark.predict(spark.read.parquet(str(d / "rows3.parquet")), str(d / "model3"), threshold=0.5)
    with pytest.raises(errors.UsageError, match="takes a pyspark DataFrame, not DataFrame"):
        fairfix.spark.predict(pd.read_parquet(d / "rows.parquet"), str(d / "model"))
    with pytest.raises(errors.ModelError, match="no such model file or directory"):
        fairfix.spark.predict(sdf, str(d / "nothing"))


def test_spark_predict_workers_refuse_a_shipped_copy_that_differs(spark: Any, scored_models: Path) -> None:
    from fairfix.data.spark_score import _ship, _worker_model
    from fairfix.models import load_model

    digest = load_model(scored_models / "model").digest
    stage = _ship(spark, scored_models / "model", None)
    spec = (stage, "model", None, None, (), None, digest)
    assert _worker_model(spec).digest == digest
    with pytest.raises(errors.ModelError, match="refusing a different model"):
        _worker_model((*spec[:-1], "0" * 64))


def test_audit_with_a_model_on_spark_gives_the_local_json(spark: Any, scored_models: Path, tmp_path: Path) -> None:
    """--engine spark --model: scored by fairfix.spark.predict, counted on Spark; the --engine arrow JSON."""
    d = scored_models
    rows = pd.read_parquet(d / "rows.parquet").head(6000)
    rows.to_parquet(tmp_path / "rows.parquet", index=False)
    rows.head(2500).to_csv(tmp_path / "rows.csv", index=False)
    pd.read_parquet(d / "rows3.parquet").head(3000).to_parquet(tmp_path / "rows3.parquet", index=False)
    cases = [("bundle", "rows.parquet", ["--threshold", "0.45"]), ("model", "rows.csv", ["--positive", "0"]),
             ("model3", "rows3.parquet", [])]
    for model, data, extra in cases:
        args = ["audit", str(tmp_path / data), "--label", "y", "--group", "grp", "--group", "h", "--model",
                str(d / model), "--format", "json", "--bootstrap", "50", "--fail-on", "accuracy<0.99", *extra]
        local = runner.invoke(app, [*args, "--engine", "arrow"])
        remote = runner.invoke(app, [*args, "--engine", "spark"])
        assert local.exit_code == remote.exit_code == 1, (model, remote.stderr, remote.exception)
        want, got = json.loads(local.stdout), json.loads(remote.stdout)
        assert got["settings"]["model"]["sha256"] == want["settings"]["model"]["sha256"]
        assert got == want, model
    # the library: a Spark DataFrame and a model directory
    report = fairfix.spark.audit(spark.read.parquet(str(tmp_path / "rows.parquet")), label="y", group=["grp"],
                                 model=str(d / "bundle"), bootstrap=0)
    local_report = fairfix.audit(rows, label="y", group=["grp"], model=_load(d / "bundle"), bootstrap=0)
    same(report, local_report)


def _load(path: Path) -> Any:
    from fairfix.models import load_model

    return load_model(path)
