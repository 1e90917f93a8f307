"""``fairfix.spark.audit`` and ``fairfix audit --engine spark`` on ``local[2]``.

The oracle is the local audit of the same rows: the JSON must be identical (for
files, ``settings.source`` included). Marked ``spark``: they need pyspark and Java 17,
which ``make`` installs; skip them locally with ``-m "not spark"`` (CI runs them).
"""

from __future__ import annotations

import json
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
    from pyspark.sql import SparkSession

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
