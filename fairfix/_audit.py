"""``fairfix.audit``: stream a table into confusion counts and compute the report."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fairfix import errors
from fairfix.data.tables import DEFAULT_BATCH_ROWS, Table, _read_ahead, infer_format, is_many, open_sources
from fairfix.metrics.counts import (
    _MISSING_CODE,
    MISSING,
    CountAccumulator,
    choose_positive,
    encode,
    float_values,
    numpy_view,
)
from fairfix.metrics.gates import parse_gate
from fairfix.metrics.rates import SUMMARY_METRICS
from fairfix.report.audit import AuditReport, build_report

Progress = Callable[[int, int | None], None]


@dataclass
class _Missing:
    """Rows with a missing value in one column: how many, and the first one (file, row)."""

    count: int = 0
    first: tuple[str, int | None] | None = None

    def add(self, mask: np.ndarray | None, offset: int, name: str, weights: np.ndarray | None = None,
            positions: np.ndarray | None = None, row_numbers: bool = True) -> None:
        """Count the rows under ``mask`` (each weighing ``weights`` rows in a counts table).

        ``positions`` maps the batch's rows to their rows in the file (when some were left out).
        """
        if mask is None:
            return
        hits = np.flatnonzero(mask)
        if hits.size:
            self.count += int(hits.size) if weights is None else int(weights[hits].sum())
            if self.first is None:
                row = int(hits[0]) if positions is None else int(positions[hits[0]])
                self.first = (name, offset + row + 1 if row_numbers else None)  # 1-based data row


@dataclass
class _Scan:
    """What the scan of a table found besides the counts."""

    missing: dict[str, _Missing] = field(default_factory=dict)
    out_of_range: int = 0
    out_of_range_example: float | None = None
    out_of_range_source: str | None = None
    dropped: int = 0
    rows: int = 0
    weight: int = 0


ENGINES = ("auto", "arrow", "duckdb", "spark")
#: The prediction column of a counts table whose rows a model scored on Spark (renamed on collection).
_SCORED = "__fairfix_prediction__"


def audit(
    data: Any,
    *,
    label: str,
    group: str | Sequence[str],
    pred: str | None = None,
    score: str | None = None,
    model: Any = None,
    counts: str | None = None,
    threshold: float | None = None,
    positive: Any = None,
    bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int | None = 0,
    min_group_size: int = 30,
    fail_on: Sequence[str] = (),
    dropna: bool = False,
    keep_missing_groups: bool = False,
    input_format: str | None = None,
    engine: str = "auto",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Progress | None = None,
) -> AuditReport:
    """Audit predictions for group disparities (DESIGN.md section 2).

    Parameters
    ----------
    data
        A path (CSV, Parquet or JSON Lines, optionally compressed), a directory or a
        glob of such files, ``"-"`` for stdin, a pandas DataFrame or a pyarrow Table;
        or a list of these, audited as one table (their rows, or their counts, add up).
    label
        Column with the true labels (any type: ints, strings, booleans).
    group
        Column(s) whose intersection defines the groups.
    pred, score, model
        Exactly one: a column of predicted labels, a column of positive-class
        probabilities turned into labels with ``score >= threshold``, or a
        loaded :class:`fairfix.models.Model` run over the rows first (a binary
        model's positive-class probability is thresholded like ``score``).
    counts
        The data is a counts table (docs/scale.md): each row stands for this
        column's number of rows (a whole number >= 0).  The report equals the
        report of those rows.  Not with ``model``.
    threshold
        Decision threshold for ``score`` or a binary ``model`` (default 0.5).
    positive
        The positive label of a binary task; by default 1/True, else the
        larger of the two labels.
    bootstrap, ci, seed
        Percentile-bootstrap resamples (0 for none), interval level and seed.
    min_group_size
        Groups with fewer rows are flagged ``small``; gates that pass on them
        are marked ``insufficient_evidence``.
    fail_on
        Gate expressions ``METRIC OP NUMBER`` over the summary.
    dropna
        Skip rows whose label, prediction or score is empty/NaN (else an error).
    keep_missing_groups
        Audit rows with a missing group value as the group ``<missing>``.
    engine
        ``"arrow"`` streams the files with pyarrow; ``"duckdb"`` has DuckDB compute
        the counts (``GROUP BY``; needs the ``duckdb`` extra); ``"auto"`` picks
        DuckDB for a directory or glob when it is installed and no model is run.
    progress
        Called as ``progress(rows_done, rows_total_or_None)`` after each batch.

    Returns
    -------
    AuditReport

    Raises
    ------
    fairfix.errors.FairfixError
        Bad options or bad data, with a one-line message.
    """
    groups = [group] if isinstance(group, str) else list(group)
    if not groups:
        raise errors.UsageError("give at least one group column (--group COL)")
    if sum(x is not None for x in (pred, score, model)) != 1:
        raise errors.UsageError("give exactly one of --pred COL, --score COL or --model PATH")
    if counts is not None and model is not None:
        raise errors.UsageError(errors.COUNTS_WITH_MODEL)
    if threshold is not None and pred is not None:
        raise errors.UsageError("--threshold applies to --score or --model only")
    if threshold is not None and model is not None and model.positive_index is None:
        raise errors.UsageError(
            f"--threshold applies to a binary model; {model.path or 'the model'} has {len(model.classes)} classes "
            "(multiclass predictions are the most probable class)"
        )
    if score is not None or model is not None:
        threshold = 0.5 if threshold is None else float(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise errors.UsageError(f"--threshold {threshold:g}: must lie in [0, 1]")
    if not 0.0 < ci < 1.0:
        raise errors.UsageError(f"--ci {ci:g}: must lie strictly between 0 and 1")
    if seed is not None and seed < 0:
        raise errors.UsageError(f"--seed {seed}: must be >= 0")
    if bootstrap < 0:
        raise errors.UsageError(f"--bootstrap {bootstrap}: must be >= 0")
    if min_group_size < 0:
        raise errors.UsageError(f"--min-group-size {min_group_size}: must be >= 0")
    if len(set(groups)) != len(groups):
        raise errors.UsageError("a --group column is named twice")
    if engine not in ENGINES:
        raise errors.UsageError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine == "duckdb" and model is not None:
        raise errors.UsageError("--engine duckdb counts columns; with --model the rows go through the model "
                                "(use --engine arrow, or --engine spark to score them on Spark)")
    gates = [parse_gate(expr, SUMMARY_METRICS) for expr in fail_on]

    items = list(data) if isinstance(data, list | tuple) else [data]
    display = ", ".join(_source_name(x) for x in items)
    if isinstance(data, str):
        from fairfix.data.frames import embedded_table

        emb = embedded_table(data)
        items = [emb] if emb is not None else items
    many = len(items) > 1 or any(isinstance(x, str | os.PathLike) and is_many(os.fspath(x)) for x in items)
    pred_col = pred if pred is not None else (score if score is not None else "<model>")
    named = [label, *groups] + ([] if model is not None else [pred_col]) + ([counts] if counts is not None else [])
    if len(set(named)) != len(named) or (model is not None and pred_col in named):
        raise errors.UsageError("the label, prediction, count and group columns must be different columns")
    from fairfix.data import spark as on_spark

    remote = [x for x in items if on_spark.is_dataframe(x) or on_spark.is_uri(x)]
    if remote and engine not in ("auto", "spark"):
        raise errors.UsageError(f"--engine {engine}: {_source_name(remote[0])} is read by Spark (--engine spark)")
    chosen = "spark" if remote else engine
    local = [x for x in items if all(x is not r for r in remote)]
    sources = open_sources(local, input_format) if local else []
    if len(sources) == 1 and not many:
        display = sources[0].name
    for table in sources:
        table.require(named)
    chosen = _choose_engine(chosen, sources, many, model)
    model_binary = model is not None and model.positive_index is not None
    if model is not None and positive is not None and model_binary:
        given = choose_positive(model.classes, positive)[0]
        pos_idx = model.classes.index(given)
    elif model_binary:
        pos_idx = model.positive_index
    #: the rows went through the model on Spark: the counts table holds its predictions
    scored_remotely = model is not None and chosen == "spark"
    weight_col = counts
    if chosen in ("duckdb", "spark"):
        engine_kw: dict[str, Any] = dict(label=label, pred=pred, score=score, groups=groups, threshold=threshold,
                                         counts=counts)
        if chosen == "duckdb":
            from fairfix.data import duck

            tbl = duck.count_rows(sources, display, **engine_kw)
        else:
            for t in sources:
                t.close()
            files = [(t.name, t.fmt) for t in sources if t.fmt in ("csv", "parquet", "jsonl") and t.name != "<stdin>"]
            if len(files) != len(sources):
                raise errors.UsageError("--engine spark reads files and Spark DataFrames only")
            uri_files = [(x, infer_format(x, input_format)) for x in remote if on_spark.is_uri(x)]
            frames = [x for x in remote if on_spark.is_dataframe(x)]
            if scored_remotely:  # fairfix.spark.predict on the executors, then the counts there
                from fairfix.data import spark_score

                assert threshold is not None
                tbl = spark_score.count_scored(frames, files + uri_files, display, model=model, label=label,
                                            groups=groups, threshold=threshold,
                                            positive_index=pos_idx if model_binary else None,
                                            prediction=_SCORED)
                tbl = tbl.rename_columns([pred_col if c == _SCORED else c for c in tbl.column_names])
            else:
                tbl = on_spark.count_rows(frames, files + uri_files, display, **engine_kw)
        weight_col = on_spark.COUNT
        sources = [Table(display, "table", tbl.column_names, tbl.num_rows, tbl, row_numbers=False)]

    acc = CountAccumulator(groups)
    scan = _Scan(missing={c: _Missing() for c in [label, pred_col, *groups]})
    thresholded = score is not None or model_binary
    if thresholded:
        acc.pred_vocab.codes_for([False, True])  # code 0: predicted negative, 1: positive
    missing_codes: list[int | None] = [None] * len(groups)
    categorical = [label, *groups] + ([pred] if pred is not None else [])
    numeric = [c for c in (score, weight_col) if c is not None]
    total_rows = None if any(t.num_rows is None for t in sources) else sum(t.num_rows or 0 for t in sources)

    def table_batches(table: Table) -> Any:
        if model is not None and not scored_remotely:
            from fairfix.models.runner import iter_predictions

            return ((table, b, proba) for b, proba, _extras in iter_predictions(
                table, model, extra_columns=[label, *groups], categorical=categorical,
                batch_rows=None if batch_rows == DEFAULT_BATCH_ROWS else batch_rows,
            ))
        return ((table, b, None) for b in _name_score_errors(table.iter_batches(
            [label, pred_col, *groups] + ([weight_col] if weight_col is not None else []),
            batch_rows=batch_rows,
            categorical=categorical,
            numeric=numeric,
        ), table, score, weight_col))

    stream: Any = (item for table in sources for item in table_batches(table))
    if len(sources) > 1 and model is None:
        stream = _read_ahead(stream, depth=2)  # the next files decode while this batch is counted
    current: Table | None = None
    offset = 0
    for table, batch, proba in stream:
        if table is not current:
            current, offset, name, rows_known = table, 0, table.name, table.row_numbers
        n_batch = batch.num_rows
        w = positions = None
        if weight_col is not None:
            w = _weights(table, weight_col, batch.column(weight_col), offset)
            if not w.all():  # rows that stand for no row leave no trace, as in the row audit
                positions = np.flatnonzero(w)
                batch, w = batch.take(_pa_array(positions)), w[positions]
        miss_kw: dict[str, Any] = {"weights": w, "positions": positions, "row_numbers": rows_known}
        y, ymiss = encode(batch.column(label), acc.label_vocab)
        if score is not None:
            p, pmiss = _threshold(name, score, batch.column(score), threshold, scan, w)
        elif model_binary:
            scores = batch.column(pred_col) if scored_remotely else _pa_array(proba[:, pos_idx])
            p, pmiss = _threshold(name, "<model>", scores, threshold, scan, w)
        elif scored_remotely:
            p, pmiss = encode(batch.column(pred_col), acc.pred_vocab)
        elif model is not None:
            p, pmiss = encode(_pa_array(np.asarray(model.classes, dtype=object)[proba.argmax(axis=1)].tolist()),
                              acc.pred_vocab)
        else:
            p, pmiss = encode(batch.column(pred_col), acc.pred_vocab)
        drop = np.zeros(batch.num_rows, dtype=bool)
        for col, mask in ((label, ymiss), (pred_col, pmiss)):
            if mask is not None:
                if dropna:
                    drop |= mask
                else:
                    scan.missing[col].add(mask, offset, name, **miss_kw)
        if dropna:
            scan.dropped += int(drop.sum()) if w is None else int(w[drop].sum())
        gcodes = []
        for i, col in enumerate(groups):
            codes, gmiss = encode(batch.column(col), acc.group_vocabs[i])
            if gmiss is not None and gmiss.any():
                if keep_missing_groups:
                    if missing_codes[i] is None:
                        missing_codes[i] = int(acc.group_vocabs[i].codes_for([_MISSING_CODE])[0])
                    codes[gmiss] = missing_codes[i]
                else:
                    scan.missing[col].add(gmiss & ~drop, offset, name, **miss_kw)
                    drop |= gmiss
            gcodes.append(codes)
        if drop.any():
            keep = ~drop
            gcodes = [g[keep] for g in gcodes]
            y, p = y[keep], p[keep]
            w = None if w is None else w[keep]
        acc.add_codes(gcodes, y, p, weights=w)
        scan.weight += len(y) if w is None else int(w.sum())
        offset += n_batch
        scan.rows += n_batch
        if progress is not None:
            progress(scan.rows, total_rows)

    _raise_for_scan(scan, label, pred_col, score, groups)
    for i, col in enumerate(groups):
        if missing_codes[i] is not None and MISSING in acc.group_vocabs[i].index:
            raise errors.DataError(
                f"{display}: group column {col!r} has the value {MISSING!r}, which --keep-missing-groups "
                "uses for missing values; rename that value"
            )
    if scan.rows == 0:
        raise errors.DataError(f"{display}: has a header but no rows")
    if counts is not None and scan.weight == 0 and not scan.dropped:
        raise errors.DataError(f"{display}: count column {weight_col!r} sums to 0: no rows to audit")
    # Predicted labels are normalised together with the labels (as acc.result() does), so
    # that the positive label found here is a class of the counts.
    label_values = sorted(
        set(acc.label_values() if thresholded else acc.result().label_classes), key=str
    )
    if len(label_values) < 2:
        if not label_values:
            raise errors.DataError(f"{display}: no rows left to audit after dropping empty values")
        raise errors.DataError(
            errors.ONE_LABEL.format(path=display, column=label, value=label_values[0])
        )
    binary = len(label_values) == 2
    pos_value: Any = None
    pos_source: str | None = None
    if binary:
        pos_value, pos_source = choose_positive(label_values, positive)
    elif positive is not None:
        raise errors.UsageError(
            f"--positive applies to a binary label; {label!r} has {len(label_values)} values"
        )
    if model is not None:
        unknown = [v for v in label_values if v not in model.classes]
        if unknown:
            raise errors.DataError(
                f"{display}: label value {unknown[0]!r} in {label!r} is not a class of the model "
                f"(classes: {', '.join(map(repr, model.classes))})"
            )
        if model_binary and model.classes[pos_idx] != pos_value:
            pos_value, pos_source = model.classes[pos_idx], "the model's positive class"
    if thresholded:
        if not binary and score is not None:
            raise errors.UsageError(
                f"--score needs a binary label; {label!r} has {len(label_values)} values "
                "(use --pred with predicted labels)"
            )
        negative = next(v for v in label_values if v != pos_value)
        result = acc.result(pred_override={False: negative, True: pos_value})
    else:
        result = acc.result()
        label_idx = [result.classes.index(c) for c in result.label_classes]
        if result.counts[..., label_idx].sum() == 0:
            raise errors.DataError(
                f"{display}: predictions in {pred_col!r} share no value with labels in {label!r} "
                f"(labels: {', '.join(map(repr, result.label_classes))})"
            )
    settings: dict[str, Any] = {
        "source": display,
        "prediction_column": pred,
        "score_column": score,
        "model": model.describe() if model is not None else None,
        "threshold": threshold,
        "dropped_rows": scan.dropped,
        "keep_missing_groups": keep_missing_groups,
    }
    if counts is not None:
        settings["counts_column"] = counts
    return build_report(
        result,
        label=label,
        positive=pos_value,
        positive_source=pos_source,
        n_bootstrap=bootstrap,
        ci=ci,
        seed=seed,
        min_group_size=min_group_size,
        gates=gates,
        settings=settings,
    )


def _source_name(item: Any) -> str:
    if type(item).__module__.startswith("pyspark."):
        return "<Spark DataFrame>"
    if isinstance(item, str | os.PathLike):
        path = os.fspath(item)
        return "<stdin>" if path == "-" else path
    if type(item).__name__ == "Table":
        return "<Table>"
    from fairfix.data.frames import source_name  # a frame fairfix read names its file (or split)

    return source_name(item)


def _choose_engine(engine: str, sources: list[Table], many: bool, model: Any) -> str:
    """The engine that computes the counts: arrow (stream the rows here) or duckdb."""
    if engine != "auto":
        if engine == "spark":
            from fairfix.data import spark as on_spark

            if not on_spark.available():
                raise errors.UsageError(on_spark._NEEDS_SPARK)
        if engine == "duckdb":
            from fairfix.data import duck

            duck.require(sources)
        return engine
    if model is not None or not many:
        return "arrow"
    from fairfix.data import duck

    return "duckdb" if duck.available() and duck.can_read(sources) else "arrow"


def _weights(table: Table, column: str, arr: Any, offset: int) -> np.ndarray:
    """The int64 counts of a counts table's batch, or a DataError naming the first bad one."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    typ = arr.type

    def bad(what: str, index: int, value: Any) -> errors.DataError:
        where = f" at row {offset + index + 1}" if table.row_numbers else ""
        return errors.DataError(
            errors.BAD_COUNT.format(path=table.name, column=column, what=what, value=value, where=where)
        )

    if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)):
        raise errors.DataError(
            errors.COUNTS_NOT_NUMERIC.format(path=table.name, column=column, type=f"its type is {typ}")
        )
    if pa.types.is_integer(typ) and not arr.null_count:
        raw = numpy_view(arr)
        if raw.dtype == np.uint64 and raw.size and raw.max() > np.iinfo(np.int64).max:
            i = int(np.argmax(raw > np.iinfo(np.int64).max))
            raise bad("a value too large", i, int(raw[i]))
        values = raw.astype(np.int64, copy=False)
        negative = values < 0
        if negative.any():
            i = int(np.argmax(negative))
            raise bad("a negative value", i, int(values[i]))
        return values
    f = float_values(arr)
    checks = (
        ("a missing value", np.isnan(f)),
        ("a negative value", f < 0),
        ("a fractional value", (f != np.floor(f)) | np.isinf(f)),
        ("a value too large to be exact", f > 2.0**53),
    )
    with np.errstate(invalid="ignore"):
        for what, mask in checks:
            if mask.any():
                i = int(np.argmax(mask))
                raise bad(what, i, "(empty)" if what == "a missing value" else f"{f[i]:g}")
    return f.astype(np.int64)


def _name_score_errors(batches: Any, table: Table, score: str | None, counts: str | None) -> Any:
    """Re-raise a CSV cell of the score (or count) column that is not a number, naming the column."""
    try:
        yield from batches
    except errors.DataError as exc:
        m = re.search(r"(?:column #(\d+): )?CSV conversion error to double: (invalid value '.*')", str(exc.__cause__))
        if (score is None and counts is None) or m is None:  # only these columns are parsed as float64
            raise
        # pyarrow names the column's index in some versions only; without it the one float64 column is meant
        unnamed = score if score is not None else counts
        column = table.columns[int(m[1])] if m[1] is not None and int(m[1]) < len(table.columns) else unnamed
        if column == counts or (column != score and score is None):
            raise errors.DataError(
                errors.COUNTS_NOT_NUMERIC.format(path=table.name, column=counts, type=f"{m[2]}")
            ) from exc.__cause__
        raise errors.DataError(
            errors.SCORE_NOT_NUMERIC.format(path=table.name, column=score, reason=m[2])
        ) from exc.__cause__


def _pa_array(values: Any) -> Any:
    import pyarrow as pa

    return pa.array(values)


def _threshold(
    name: str, column: str, arr: Any, threshold: float | None, scan: _Scan, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predicted-positive codes (0/1) from a score column, and its missing mask."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_decimal(arr.type)):
        raise errors.DataError(
            errors.SCORE_NOT_NUMERIC.format(path=name, column=column, reason=f"its type is {arr.type}")
        )
    s = float_values(arr)  # not arr.to_numpy(): that imports pandas (~0.35 s)
    miss = np.isnan(s)
    with np.errstate(invalid="ignore"):
        bad = (s < 0.0) | (s > 1.0)
    if bad.any():
        scan.out_of_range += int(bad.sum()) if weights is None else int(weights[bad].sum())
        if scan.out_of_range_example is None:
            scan.out_of_range_example = float(s[np.flatnonzero(bad)[0]])
            scan.out_of_range_source = name
    assert threshold is not None
    with np.errstate(invalid="ignore"):
        codes = (s >= threshold).astype(np.int64)
    return codes, (miss if miss.any() else None)


def _raise_for_scan(
    scan: _Scan, label: str, pred_col: str, score: str | None, groups: list[str]
) -> None:
    if scan.out_of_range:
        assert score is not None
        raise errors.DataError(
            errors.SCORE_OUT_OF_RANGE.format(
                path=scan.out_of_range_source, column=score, count=scan.out_of_range,
                example=f"{scan.out_of_range_example:g}",
            )
        )
    for col, template, unplaced in ((label, errors.NULL_VALUES, errors.NULL_VALUES_UNPLACED),
                                    (pred_col, errors.NULL_VALUES, errors.NULL_VALUES_UNPLACED),
                                    *((g, errors.MISSING_GROUPS, errors.MISSING_GROUPS_UNPLACED) for g in groups)):
        m = scan.missing[col]
        if m.count:
            assert m.first is not None
            path, first = m.first
            raise errors.DataError(
                (template if first is not None else unplaced).format(
                    path=path, column=col, count=m.count, first=first
                )
            )
