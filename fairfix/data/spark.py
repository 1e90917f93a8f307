"""The Spark engine: the counts on the cluster (``groupBy().count()``), collected as a counts table.

What ``fairfix audit --engine spark`` and ``fairfix.spark.audit`` (the public entry, ``fairfix/spark.py``)
run; the audit reads the counts table this returns as it reads any (docs/scale.md).

pyspark is an optional dependency (``pip install 'fairfix[spark]'``, Java 17);
it is imported only here, only when this engine runs.

Reading files: Parquet and JSON Lines with Spark's own readers; CSV as text
(``inferSchema`` off) with fairfix's missing-value markers turned into nulls,
so values are normalised as the local CSV reader's are (one difference: Spark
does not tell a quoted ``"NA"`` from a bare ``NA``; both are missing).  Scores
are thresholded on Spark into 0.0 / 1.0 (an out-of-range score is kept, so the
audit names it), which the audit's own ``score >= threshold`` maps to the same
predictions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from fairfix import errors
from fairfix.data.duck import COUNT, _checked_counts  # one counts-table shape for every engine

_NEEDS_SPARK = "--engine spark needs pyspark and Java 17: pip install 'fairfix[spark]'"


def available() -> bool:
    """True when pyspark can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("pyspark") is not None


def is_dataframe(obj: Any) -> bool:
    """True for a pyspark DataFrame (classic or Spark Connect), without importing pyspark."""
    return type(obj).__module__.startswith("pyspark.") and hasattr(obj, "groupBy")


def is_uri(obj: Any) -> bool:
    """True for a path with a scheme (``s3a://``, ``hdfs://``, ``file://``) that only Spark reads."""
    return isinstance(obj, str) and "://" in obj


def session() -> Any:
    """The active SparkSession, else a new one (master and settings from Spark's own configuration)."""
    if not available():
        raise errors.UsageError(_NEEDS_SPARK)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    from pyspark import SparkConf

    if "PYSPARK_PYTHON" not in os.environ and SparkConf().get("spark.master", "local[*]").startswith("local"):
        # A local master runs its Python workers on this machine: with this interpreter (the one
        # that has fairfix), not whatever `python3` comes first on PATH.  A cluster's setting wins.
        import sys

        os.environ["PYSPARK_PYTHON"] = sys.executable
    builder = SparkSession.builder.appName("fairfix").config("spark.ui.showConsoleProgress", "false")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _spark_type_to_arrow(dtype: Any) -> Any:
    import pyarrow as pa
    from pyspark.sql import types as T

    mapping = [
        (T.LongType, pa.int64()), (T.IntegerType, pa.int32()), (T.ShortType, pa.int16()),
        (T.ByteType, pa.int8()), (T.DoubleType, pa.float64()), (T.FloatType, pa.float32()),
        (T.StringType, pa.string()), (T.BooleanType, pa.bool_()),
    ]
    for cls, typ in mapping:
        if isinstance(dtype, cls):
            return typ
    return None  # let pyarrow infer (decimals, dates, ...)


def _frames(items: Sequence[Any], files: Sequence[tuple[str, str]]) -> list[tuple[Any, bool, str]]:
    """(DataFrame, read as CSV text, name) for every item: DataFrames as given, files read by format."""
    spark = session()
    frames = [(x, False, "<Spark DataFrame>") for x in items if is_dataframe(x)]
    by_fmt: dict[str, list[str]] = {}
    for path, fmt in files:
        by_fmt.setdefault(fmt, []).append(path)
    for fmt, paths in by_fmt.items():
        uris = [p if is_uri(p) else os.path.abspath(p) for p in paths]
        name = paths[0] if len(paths) == 1 else f"{len(paths)} {fmt} files"
        if fmt == "parquet":
            frames.append((spark.read.parquet(*uris), False, name))
        elif fmt == "csv":
            frames.append((spark.read.csv(uris, header=True, inferSchema=False), True, name))
        else:
            frames.append((spark.read.json(uris), False, name))
    return frames


def checked_frames(items: Sequence[Any], files: Sequence[tuple[str, str]], needed: Sequence[str]) -> Any:
    """``(DataFrame, read as CSV text)`` for every item and format (:func:`_frames`), each holding ``needed``.

    Raises
    ------
    fairfix.errors.DataError
        A frame lacks one of ``needed`` (named with the frame's source).
    """
    for df, csv_text, source in _frames(items, files):
        for col in needed:
            if col not in df.columns:
                shown = ", ".join(repr(c) for c in df.columns[:40])
                raise errors.DataError(errors.MISSING_COLUMN.format(path=source, column=col, columns=shown))
        yield df, csv_text


def count_rows(
    items: Sequence[Any],
    files: Sequence[tuple[str, str]],
    name: str,
    *,
    label: str,
    pred: str | None,
    score: str | None,
    groups: Sequence[str],
    threshold: float | None,
    counts: str | None = None,
) -> Any:
    """The counts table (pyarrow; columns: groups, label, prediction, COUNT) computed on Spark.

    ``items`` may hold Spark DataFrames; ``files`` are ``(path, format)`` pairs read
    with Spark.  Each DataFrame (and each format's files) is grouped on its own and
    the counts are stacked: counts merge by summing.
    """
    if not available():
        raise errors.UsageError(_NEEDS_SPARK)
    import pyarrow as pa

    spark_error = _spark_error()

    pred_col = score if score is not None else pred
    assert pred_col is not None
    needed = [*groups, label, pred_col] + ([counts] if counts is not None else [])
    tables = []
    try:
        for df, csv_text in checked_frames(items, files, needed):
            tables.append(_count_frame(df, csv_text, groups, label, pred_col, score, threshold, counts))
    except spark_error as exc:
        reason = " ".join(str(exc).split())[:300]
        raise errors.DataError(f"{name}: Spark could not compute the counts: {reason}") from exc
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    if counts is not None:
        table = _checked_counts(table, name, counts)
    return table


def _spark_error() -> type[Exception]:
    """The base exception of pyspark (Exception before pyspark 3.4)."""
    try:
        from pyspark.errors import PySparkException

        return PySparkException
    except ImportError:  # pyspark < 3.4
        return Exception


def _count_frame(df: Any, csv_text: bool, groups: Sequence[str], label: str, pred_col: str,
                 score: str | None, threshold: float | None, counts: str | None) -> Any:
    import pyarrow as pa
    from pyspark.sql import functions as F

    from fairfix.data.tables import NULL_VALUES

    def col(c: str) -> Any:
        x = df[c]
        if csv_text:  # the local CSV reader's missing-value markers
            x = F.when(x.isin(NULL_VALUES), F.lit(None)).otherwise(x)
        return x

    keys = [col(c).alias(c) for c in [*groups, label]]
    if score is not None:
        s = col(score).cast("double") if csv_text else col(score)
        t = float(threshold if threshold is not None else 0.5)
        keys.append(
            F.when(s.isNull() | F.isnan(s), F.lit(None).cast("double"))
            .when((s < 0) | (s > 1), s.cast("double"))
            .when(s >= t, F.lit(1.0)).otherwise(F.lit(0.0)).alias(score)
        )
    else:
        keys.append(col(pred_col).alias(pred_col))
    names = [*groups, label, pred_col]
    if counts is None:
        aggs = [F.count(F.lit(1)).alias(COUNT)]
        grouped = df.select(*keys)
    else:
        d = col(counts).cast("double")
        grouped = df.select(*keys, d.alias("__d"))
        d = F.col("__d")
        aggs = [
            F.count(F.when(d.isNull() | F.isnan(d), 1)).alias("__missing"),
            F.min(d).alias("__min"),
            F.min(F.when((d != F.floor(d)) | (F.abs(d) == float("inf")), d)).alias("__fraction"),
            F.sum(d).alias("__sum"),
        ]
    out = grouped.groupBy(*names).agg(*aggs)
    schema = out.schema
    rows = out.collect()  # only the counts reach the driver: one row per cell
    arrays = {}
    for i, field in enumerate(schema.fields):
        typ = _spark_type_to_arrow(field.dataType)
        arrays[field.name] = pa.array([r[i] for r in rows], type=typ)
    return pa.table(arrays)
