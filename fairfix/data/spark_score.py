"""Scoring on Spark: ``fairfix.spark.predict`` (public there) and the scored counts of ``audit --engine spark --model``.

``predict`` scores a Spark DataFrame with ``mapInPandas``: the model or bundle directory is
shipped to the executors once (``addFile``), loaded once per Python worker with the checks of a
local load, and applied in the model's batches; its rows are those of ``fairfix predict``.
:func:`count_scored` scores the rows so and counts (groups, label, prediction) on Spark, for
the audit (``fairfix._audit``), which imports this module and not ``fairfix.spark`` (whose
``audit`` imports the audit).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from fairfix import errors
from fairfix.data.spark import (
    _NEEDS_SPARK,
    _count_frame,
    _spark_error,
    available,
    checked_frames,
    is_dataframe,
    session,
)

# -- scoring on Spark -----------------------------------------------------------------

#: Loaded models of this Python worker, by (shipped folder, load options): each worker
#: process loads a shipped model once and reuses it for every partition it scores.
_WORKER_MODELS: dict[tuple[Any, ...], Any] = {}
_STAGED: list[str] = []  # driver-side copies shipped with addFile, removed at exit


def predict(
    df: Any,
    model: Any,
    *,
    id_column: str | None = None,
    threshold: float | None = None,
    base: str | os.PathLike[str] | None = None,
    factory: str | None = None,
    features: Sequence[str] | None = None,
    text_column: str | None = None,
    batch_rows: int | None = None,
) -> Any:
    """Score a Spark DataFrame with a fairfix model or bundle: ``mapInPandas`` on the executors.

    The rows are those of ``fairfix predict``: ``score`` (binary; ``score_<class>``
    per class for multiclass), ``pred`` (``score >= threshold`` for a binary
    model), and for a FairNet bundle ``risk`` and ``corrected``.

    Parameters
    ----------
    df
        A pyspark DataFrame holding the model's input columns.
    model
        A model or bundle directory (or a ``.safetensors`` state dict with
        ``factory``), or a model loaded with :func:`fairfix.models.load_model`
        (its ``path`` is what is shipped).  The directory is copied once to the
        executors with ``SparkContext.addFile``; each Python worker loads it with
        the checks of a local load (manifest hashes, the bundle's base sha256, no
        pickle) and refuses a copy whose digest differs from the driver's.
    id_column
        A column copied to the output before the prediction columns, as
        ``fairfix predict --id``.  Without it the output keeps every input
        column (Spark has no row order, so there is no ``row`` number).
    threshold, batch_rows
        As for ``fairfix predict`` (``batch_rows`` defaults to the model's).
        Within a partition the rows are scored in batches of ``batch_rows`` in
        the partition's order, so a DataFrame of one partition gives the local
        batches, and the local bytes.
    base, factory, features, text_column
        As for :func:`fairfix.models.load_model`: a bundle's base model (shipped
        too), the factory of a state dict, the input columns of a factory model,
        a Hugging Face model's text column.

    Returns
    -------
    pyspark.sql.DataFrame
        Lazy, like any transformation: nothing is scored before an action
        (``write``, ``count``, ...).
    """
    if not available():
        raise errors.UsageError("fairfix.spark.predict needs pyspark and Java 17: pip install 'fairfix[spark]'")
    if not is_dataframe(df):
        raise errors.UsageError(f"fairfix.spark.predict takes a pyspark DataFrame, not {type(df).__name__}")
    from pathlib import Path

    from fairfix.models import load_model
    from fairfix.models.base import Model
    from fairfix.predict import checked_threshold

    if isinstance(model, Model):
        if model.path is None:
            raise errors.UsageError("fairfix.spark.predict ships a model directory: save the model first "
                                    "(it has no path)")
        inner = getattr(model, "base", None)  # a bundle's base model
        if base is None and inner is not None and inner.path is not None:
            base = inner.path
        model = model.path
    path = Path(model)
    base_path = Path(base) if base is not None else None
    feats = list(features) if features is not None else None
    # The driver loads it first: a bad model fails here, as one line, before any job runs.
    loaded = load_model(path, base=base_path, factory=factory, features=feats, text_column=text_column)
    threshold = checked_threshold(loaded, threshold)
    for col in [*loaded.input_columns, *([id_column] if id_column is not None else [])]:
        if col not in df.columns:
            shown = ", ".join(repr(c) for c in df.columns[:40])
            raise errors.DataError(errors.MISSING_COLUMN.format(path="<Spark DataFrame>", column=col,
                                                                columns=shown))
    step = int(batch_rows or loaded.batch_rows)
    if step < 1:
        raise errors.UsageError(f"batch_rows {step}: must be >= 1")
    schema, kept = _output_schema(df, loaded, id_column)
    stage = _ship(session(), path, base_path)
    spec = (stage, path.name, base_path.name if base_path is not None else None, factory,
            tuple(feats or ()), text_column, loaded.digest)
    columns = list(dict.fromkeys([*kept, *loaded.input_columns]))

    def score(frames: Any) -> Any:  # runs on the executors: only strings and numbers are captured
        yield from _score_partition(frames, spec, kept, columns, threshold, step)

    return df.select(*columns).mapInPandas(score, schema)


def _output_schema(df: Any, model: Any, id_column: str | None) -> tuple[Any, list[str]]:
    """The result's schema (kept columns, scores, pred, extras) and the kept input columns."""
    from pyspark.sql import types as T

    from fairfix.predict import output_columns

    kept = [id_column] if id_column is not None else list(df.columns)
    names = output_columns(model)
    clash = [c for c in names if c in kept]
    if clash:
        raise errors.UsageError(
            f"the DataFrame has a column {clash[0]!r}, which fairfix.spark.predict writes; "
            "pass id_column= (only that column is kept) or rename it"
        )
    values = {type(c) for c in model.classes}
    pred_type: Any
    if values <= {bool}:
        pred_type = T.BooleanType()
    elif values <= {int}:
        pred_type = T.LongType()
    elif values <= {int, float}:
        pred_type = T.DoubleType()
    else:
        pred_type = T.StringType()
    fields = [df.schema[c] for c in kept]
    fields += [T.StructField(n, T.DoubleType()) for n in names[: len(names) - 1 - len(model.extra_outputs)]]
    fields.append(T.StructField("pred", pred_type))
    spark_types = {"double": T.DoubleType(), "boolean": T.BooleanType(), "long": T.LongType(),
                   "string": T.StringType()}
    fields += [T.StructField(n, spark_types[t]) for n, t in model.extra_outputs.items()]
    return T.StructType(fields), kept


def _ship(spark: Any, model: Any, base: Any) -> str:
    """Copy the model (and a bundle's base) into one folder and ``addFile`` it; its name."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    stage = Path(tempfile.mkdtemp(prefix="fairfix-spark-model-"))
    if not _STAGED:
        atexit.register(_remove_staged)
    _STAGED.append(str(stage))
    for role, src in (("model", model), ("base", base)):
        if src is None:
            continue
        (stage / role).mkdir()
        if Path(src).is_dir():
            shutil.copytree(src, stage / role / Path(src).name)
        else:
            shutil.copy2(src, stage / role / Path(src).name)
    spark.sparkContext.addFile(str(stage), recursive=True)
    return stage.name


def _remove_staged() -> None:
    import shutil

    for p in _STAGED:
        shutil.rmtree(p, ignore_errors=True)


def _worker_model(spec: tuple[Any, ...]) -> Any:
    """The shipped model, loaded once per Python worker with the local checks."""
    model = _WORKER_MODELS.get(spec)
    if model is not None:
        return model
    from pathlib import Path

    from pyspark import SparkFiles

    from fairfix.models import load_model

    stage, name, base_name, factory, features, text_column, digest = spec
    root = Path(SparkFiles.get(stage))
    base = root / "base" / base_name if base_name is not None else None
    model = load_model(root / "model" / name, base=base, factory=factory, features=list(features) or None,
                       text_column=text_column)
    if model.digest != digest:
        raise errors.ModelError(
            f"{name}: the copy on this executor has sha256 {str(model.digest)[:12]}..., the driver loaded "
            f"{str(digest)[:12]}...; refusing a different model"
        )
    _WORKER_MODELS[spec] = model
    return model


def _score_partition(frames: Any, spec: tuple[Any, ...], kept: Sequence[str], columns: Sequence[str],
                     threshold: float, step: int) -> Any:
    """Score one partition's pandas batches in ``step``-row batches, in the partition's order."""
    import pandas as pd

    from fairfix.predict import prediction_columns

    model = _worker_model(spec)
    pending: list[Any] = []
    held = 0

    def scored(frame: Any) -> Any:
        proba, extras = model.predict_with_extras(frame[model.input_columns].reset_index(drop=True))
        out = {c: frame[c].to_numpy() for c in kept}
        out.update(prediction_columns(model, proba, threshold))
        out.update(extras)
        return pd.DataFrame(out)

    for frame in frames:
        if len(frame) == 0:
            continue
        pending.append(frame)
        held += len(frame)
        if held < step:
            continue
        batch = pd.concat(pending, ignore_index=True) if len(pending) > 1 else frame.reset_index(drop=True)
        full = (len(batch) // step) * step
        for start in range(0, full, step):
            yield scored(batch.iloc[start:start + step])
        rest = batch.iloc[full:]
        pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield scored(pd.concat(pending, ignore_index=True) if len(pending) > 1 else pending[0])


def count_scored(
    items: Sequence[Any],
    files: Sequence[tuple[str, str]],
    name: str,
    *,
    model: Any,
    label: str,
    groups: Sequence[str],
    threshold: float,
    positive_index: int | None,
    prediction: str,
) -> Any:
    """Score the rows with the model on Spark (``fairfix.spark.predict``), then count them there.

    The counts table's prediction column is called ``prediction``: for a binary model the
    probability of class ``positive_index`` thresholded into 0.0 / 1.0 (as ``count_rows`` does
    a ``score`` column), for a multiclass model the predicted class.  CSV files are read as text
    with the missing-value markers turned into nulls; the model's numeric inputs are cast to
    double, as the local CSV reader parses them.
    """
    if not available():
        raise errors.UsageError(_NEEDS_SPARK)
    import pyarrow as pa
    from pyspark.sql import functions as F

    from fairfix.data.tables import NULL_VALUES

    spark_error = _spark_error()
    needed = list(dict.fromkeys([*groups, label, *model.input_columns]))
    numeric = set(getattr(model, "numeric_columns", []) or [])
    tables = []
    try:
        for df, csv_text in checked_frames(items, files, needed):
            if csv_text:
                cols = []
                for c in needed:
                    x = F.when(df[c].isin(NULL_VALUES), F.lit(None)).otherwise(df[c])
                    cols.append((x.cast("double") if c in numeric and c not in (label, *groups) else x).alias(c))
                df = df.select(*cols)
            else:
                df = df.select(*needed)
            scored = predict(df, model, threshold=threshold if model.positive_index is not None else None)
            if positive_index is not None:
                score = scored["score"] if positive_index == model.positive_index else F.lit(1.0) - scored["score"]
                scored = scored.select(*groups, label, score.alias(prediction))
                tables.append(_count_frame(scored, False, groups, label, prediction, prediction, threshold, None))
            else:
                scored = scored.select(*groups, label, scored["pred"].alias(prediction))
                tables.append(_count_frame(scored, False, groups, label, prediction, None, None, None))
    except spark_error as exc:
        reason = " ".join(str(exc).split())[:300]
        raise errors.DataError(f"{name}: Spark could not score or count the rows: {reason}") from exc
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
