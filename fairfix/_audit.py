"""``fairfix.audit``: stream a table into confusion counts and compute the report."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fairfix import errors
from fairfix.data.tables import DEFAULT_BATCH_ROWS, open_table
from fairfix.metrics.counts import _MISSING_CODE, MISSING, CountAccumulator, encode, float_values, normalize_values
from fairfix.metrics.gates import parse_gate
from fairfix.metrics.rates import SUMMARY_METRICS
from fairfix.report.audit import AuditReport, build_report

Progress = Callable[[int, int | None], None]


@dataclass
class _Missing:
    """Rows with a missing value in one column: how many, and the first one."""

    count: int = 0
    first: int | None = None

    def add(self, mask: np.ndarray | None, offset: int) -> None:
        if mask is None:
            return
        hits = np.flatnonzero(mask)
        if hits.size:
            self.count += int(hits.size)
            if self.first is None:
                self.first = offset + int(hits[0]) + 1  # 1-based data row


@dataclass
class _Scan:
    """What the scan of a table found besides the counts."""

    missing: dict[str, _Missing] = field(default_factory=dict)
    out_of_range: int = 0
    out_of_range_example: float | None = None
    dropped: int = 0
    rows: int = 0


def choose_positive(classes: Sequence[Any], given: Any = None) -> tuple[Any, str]:
    """The positive label of a binary task and where the choice came from.

    Default: ``1`` (or ``True``) when present, else the larger of the two labels
    (lexically for strings).
    """
    if given is not None:
        for c in classes:
            if c == given and type(c) is type(given):
                return c, "--positive"
        norm = normalize_values([str(given)])[0] if not isinstance(given, bool) else given
        for c in classes:
            if c == norm or str(c) == str(given):
                return c, "--positive"
        raise errors.DataError(
            f"--positive {given!r} is not a label value; labels are: {', '.join(map(repr, classes))}"
        )
    for c in classes:
        if c is True or (isinstance(c, int | float) and not isinstance(c, bool) and c == 1):
            return c, f"default: {c!r} is the positive label"
    if all(isinstance(c, str) for c in classes):
        return max(classes), f"default: {max(classes)!r} is the lexically larger label"
    from fairfix.metrics.counts import _sorted_values

    top = _sorted_values(classes)[-1]
    return top, f"default: {top!r} is the larger label"


def audit(
    data: Any,
    *,
    label: str,
    group: str | Sequence[str],
    pred: str | None = None,
    score: str | None = None,
    model: Any = None,
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
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Progress | None = None,
) -> AuditReport:
    """Audit predictions for group disparities (DESIGN.md section 2).

    Parameters
    ----------
    data
        A path (CSV, Parquet or JSON Lines, optionally compressed), ``"-"`` for
        stdin, a pandas DataFrame or a pyarrow Table.
    label
        Column with the true labels (any type: ints, strings, booleans).
    group
        Column(s) whose intersection defines the groups.
    pred, score, model
        Exactly one: a column of predicted labels, a column of positive-class
        probabilities turned into labels with ``score >= threshold``, or a
        loaded :class:`fairfix.models.Model` run over the rows first (a binary
        model's positive-class probability is thresholded like ``score``).
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
    gates = [parse_gate(expr, SUMMARY_METRICS) for expr in fail_on]

    if isinstance(data, str):
        from fairfix.data.frames import embedded_table

        emb = embedded_table(data)
        data = emb if emb is not None else data
    table = open_table(data, input_format)
    pred_col = pred if pred is not None else (score if score is not None else "<model>")
    table.require([label, *groups] + ([] if model is not None else [pred_col]))
    if label in groups or pred_col in groups or pred_col == label:
        raise errors.UsageError("the label, prediction and group columns must be different columns")
    model_binary = model is not None and model.positive_index is not None
    if model is not None and positive is not None and model_binary:
        given = choose_positive(model.classes, positive)[0]
        pos_idx = model.classes.index(given)
    elif model_binary:
        pos_idx = model.positive_index

    acc = CountAccumulator(groups)
    scan = _Scan(missing={c: _Missing() for c in [label, pred_col, *groups]})
    thresholded = score is not None or model_binary
    if thresholded:
        acc.pred_vocab.codes_for([False, True])  # code 0: predicted negative, 1: positive
    missing_codes = [None] * len(groups)
    categorical = [label, *groups] + ([pred] if pred is not None else [])
    if model is not None:
        from fairfix.models.runner import iter_predictions

        batches: Any = iter_predictions(
            table, model, extra_columns=[label, *groups], categorical=categorical,
            batch_rows=None if batch_rows == DEFAULT_BATCH_ROWS else batch_rows,
        )
    else:
        batches = ((b, None, None) for b in _name_score_errors(table.iter_batches(
            [label, pred_col, *groups],
            batch_rows=batch_rows,
            categorical=categorical,
            numeric=[score] if score is not None else [],
        ), table.name, score))
    for batch, proba, _extras in batches:
        offset = scan.rows
        scan.rows += batch.num_rows
        y, ymiss = encode(batch.column(label), acc.label_vocab)
        if score is not None:
            p, pmiss = _threshold(table.name, score, batch.column(score), threshold, scan, offset)
        elif model_binary:
            p, pmiss = _threshold(table.name, "<model>", _pa_array(proba[:, pos_idx]), threshold, scan, offset)
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
                    scan.missing[col].add(mask, offset)
        if dropna:
            scan.dropped += int(drop.sum())
        gcodes = []
        for i, col in enumerate(groups):
            codes, gmiss = encode(batch.column(col), acc.group_vocabs[i])
            if gmiss is not None and gmiss.any():
                if keep_missing_groups:
                    if missing_codes[i] is None:
                        missing_codes[i] = int(acc.group_vocabs[i].codes_for([_MISSING_CODE])[0])
                    codes[gmiss] = missing_codes[i]
                else:
                    scan.missing[col].add(gmiss & ~drop, offset)
                    drop |= gmiss
            gcodes.append(codes)
        if drop.any():
            keep = ~drop
            gcodes = [g[keep] for g in gcodes]
            y, p = y[keep], p[keep]
        acc.add_codes(gcodes, y, p)
        if progress is not None:
            progress(scan.rows, table.num_rows)

    _raise_for_scan(table.name, scan, label, pred_col, score, groups)
    for i, col in enumerate(groups):
        if missing_codes[i] is not None and MISSING in acc.group_vocabs[i].index:
            raise errors.DataError(
                f"{table.name}: group column {col!r} has the value {MISSING!r}, which --keep-missing-groups "
                "uses for missing values; rename that value"
            )
    if scan.rows == 0:
        raise errors.DataError(f"{table.name}: has a header but no rows")
    # Predicted labels are normalised together with the labels (as acc.result() does), so
    # that the positive label found here is a class of the counts.
    label_values = sorted(
        set(acc.label_values() if thresholded else acc.result().label_classes), key=str
    )
    if len(label_values) < 2:
        if not label_values:
            raise errors.DataError(f"{table.name}: no rows left to audit after dropping empty values")
        raise errors.DataError(
            errors.ONE_LABEL.format(path=table.name, column=label, value=label_values[0])
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
                f"{table.name}: label value {unknown[0]!r} in {label!r} is not a class of the model "
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
        counts = acc.result(pred_override={False: negative, True: pos_value})
    else:
        counts = acc.result()
        label_idx = [counts.classes.index(c) for c in counts.label_classes]
        if counts.counts[..., label_idx].sum() == 0:
            raise errors.DataError(
                f"{table.name}: predictions in {pred_col!r} share no value with labels in {label!r} "
                f"(labels: {', '.join(map(repr, counts.label_classes))})"
            )
    settings: dict[str, Any] = {
        "source": table.name,
        "prediction_column": pred,
        "score_column": score,
        "model": model.describe() if model is not None else None,
        "threshold": threshold,
        "dropped_rows": scan.dropped,
        "keep_missing_groups": keep_missing_groups,
    }
    return build_report(
        counts,
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


def _name_score_errors(batches: Any, name: str, score: str | None) -> Any:
    """Re-raise a CSV score cell that is not a number as SCORE_NOT_NUMERIC, naming the column."""
    try:
        yield from batches
    except errors.DataError as exc:
        m = re.search(r"conversion error to double: (invalid value '.*')", str(exc.__cause__))
        if score is None or m is None:  # the score is the only column parsed as float64
            raise
        raise errors.DataError(
            errors.SCORE_NOT_NUMERIC.format(path=name, column=score, reason=m[1])
        ) from exc.__cause__


def _pa_array(values: Any) -> Any:
    import pyarrow as pa

    return pa.array(values)


def _threshold(
    name: str, column: str, arr: Any, threshold: float | None, scan: _Scan, offset: int
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
        scan.out_of_range += int(bad.sum())
        if scan.out_of_range_example is None:
            scan.out_of_range_example = float(s[np.flatnonzero(bad)[0]])
    assert threshold is not None
    with np.errstate(invalid="ignore"):
        codes = (s >= threshold).astype(np.int64)
    return codes, (miss if miss.any() else None)


def _raise_for_scan(
    name: str, scan: _Scan, label: str, pred_col: str, score: str | None, groups: list[str]
) -> None:
    if scan.out_of_range:
        assert score is not None
        raise errors.DataError(
            errors.SCORE_OUT_OF_RANGE.format(
                path=name, column=score, count=scan.out_of_range, example=f"{scan.out_of_range_example:g}"
            )
        )
    for col in (label, pred_col):
        m = scan.missing[col]
        if m.count:
            raise errors.DataError(
                errors.NULL_VALUES.format(path=name, column=col, count=m.count, first=m.first)
            )
    for col in groups:
        m = scan.missing[col]
        if m.count:
            raise errors.DataError(
                errors.MISSING_GROUPS.format(path=name, column=col, count=m.count, first=m.first)
            )
