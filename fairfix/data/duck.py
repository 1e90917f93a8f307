"""Counts computed by DuckDB: one ``GROUP BY`` over many files, out of core.

The ``duckdb`` engine of ``fairfix audit`` hands DuckDB the files (Parquet, CSV or
JSON Lines, one format at a time) and gets back a counts table, one row per
(group columns..., label, prediction) with the number of rows (docs/scale.md);
the audit then reads that small table as it reads any counts table.  DuckDB is
an optional dependency (``pip install 'fairfix[duckdb]'``), imported only here
and only when this engine runs.

CSV files are read as text (``all_varchar``) with fairfix's missing-value
markers, so their values are normalised exactly as the arrow engine's; a score
column is cast to a number.  Scores are thresholded in SQL into 0.0 / 1.0 (an
out-of-range score is kept as it is, so that the audit names it), which the
audit's own ``score >= threshold`` maps to the same predictions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from fairfix import errors
from fairfix.data.tables import NULL_VALUES, Table

COUNT = "__fairfix_rows__"
_COMPRESSED = {"csv": (".gz", ".zst"), "jsonl": (".gz", ".zst"), "parquet": ()}
_NEEDS_DUCKDB = "--engine duckdb needs DuckDB: pip install 'fairfix[duckdb]'"


def available() -> bool:
    """True when the duckdb package can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("duckdb") is not None


def _unreadable(sources: Sequence[Table]) -> str | None:
    """Why DuckDB cannot read these sources, or None when it can."""
    fmts = {t.fmt for t in sources}
    for t in sources:
        if t.fmt not in _COMPRESSED or t.name == "<stdin>":
            return f"{t.name}: DuckDB reads files only, not {t.name if t.name.startswith('<') else t.fmt}"
        lower = t.name.lower()
        for comp in (".gz", ".bz2", ".zst", ".lz4"):
            if lower.endswith(comp) and comp not in _COMPRESSED[t.fmt]:
                return f"{t.name}: DuckDB cannot read {comp} compressed {t.fmt}"
    if len(fmts) > 1:
        first = {f: next(t.name for t in sources if t.fmt == f) for f in sorted(fmts)}
        shown = ", ".join(f"{name} is {f}" for f, name in first.items())
        return f"the files mix formats ({shown}); DuckDB reads one format at a time"
    if len({t.delimiter for t in sources}) > 1:
        return "the CSV files mix delimiters (tabs and commas)"
    return None


def can_read(sources: Sequence[Table]) -> bool:
    """True when DuckDB can compute the counts of these sources."""
    return _unreadable(sources) is None


def require(sources: Sequence[Table]) -> None:
    """Raise a FairfixError when DuckDB is missing or cannot read ``sources``."""
    if not available():
        raise errors.UsageError(_NEEDS_DUCKDB)
    why = _unreadable(sources)
    if why is not None:
        raise errors.UsageError(f"--engine duckdb: {why} (use --engine arrow)")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _scan_sql(sources: Sequence[Table]) -> str:
    files = "[" + ", ".join(_literal(os.path.abspath(t.name)) for t in sources) + "]"
    fmt = sources[0].fmt
    if fmt == "parquet":
        return f"read_parquet({files}, union_by_name = true)"
    if fmt == "csv":
        nulls = "[" + ", ".join(_literal(v) for v in NULL_VALUES) + "]"
        return (
            f"read_csv({files}, header = true, all_varchar = true, union_by_name = true, "
            f"delim = {_literal(sources[0].delimiter)}, quote = '\"', escape = '\"', nullstr = {nulls})"
        )
    return f"read_json({files}, format = 'newline_delimited', union_by_name = true)"


def count_rows(
    sources: Sequence[Table],
    name: str,
    *,
    label: str,
    pred: str | None,
    score: str | None,
    groups: Sequence[str],
    threshold: float | None,
    counts: str | None = None,
) -> Any:
    """The counts table of ``sources`` as a pyarrow Table (columns: groups, label, prediction, COUNT).

    With ``counts`` the sources are counts tables themselves: their count column is
    checked (whole numbers >= 0, none missing) and summed.

    Raises
    ------
    fairfix.errors.FairfixError
        DuckDB is not installed, cannot read the files, or a value is bad.
    """
    require(sources)
    import duckdb

    csv = sources[0].fmt == "csv"
    cols = [_ident(g) for g in groups] + [_ident(label)]
    if score is not None:
        s = f"CAST({_ident(score)} AS DOUBLE)" if csv else _ident(score)
        t = repr(float(threshold if threshold is not None else 0.5))
        pred_sql = (
            f"CASE WHEN {s} IS NULL OR isnan({s}) THEN NULL WHEN {s} < 0 OR {s} > 1 THEN {s} "
            f"WHEN {s} >= {t} THEN 1.0 ELSE 0.0 END AS {_ident(score)}"
        )
    else:
        assert pred is not None
        pred_sql = _ident(pred)
    if counts is None:
        aggregates = [f"count(*) AS {COUNT}"]
    else:
        # Checked before summing: a sum would hide a missing, negative or fractional count.
        d = f"CAST({_ident(counts)} AS DOUBLE)"
        aggregates = [
            f"count(*) FILTER (WHERE {d} IS NULL OR isnan({d})) AS __missing",
            f"min({d}) AS __min",
            f"min({d}) FILTER (WHERE {d} <> floor({d}) OR isinf({d})) AS __fraction",
            f"sum({d}) AS __sum",
        ]
    sql = (
        f"SELECT {', '.join(cols)}, {pred_sql}, {', '.join(aggregates)} "
        f"FROM {_scan_sql(sources)} GROUP BY ALL"
    )
    con = duckdb.connect(":memory:", config={"preserve_insertion_order": False})
    try:
        table = con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        reason = " ".join(str(exc).split())
        if len(reason) > 300:
            reason = reason[:300] + "..."
        if score is not None and "Conversion" in type(exc).__name__ and _ident(score)[1:-1] in reason:
            raise errors.DataError(errors.SCORE_NOT_NUMERIC.format(path=name, column=score, reason=reason)) from exc
        raise errors.DataError(f"{name}: cannot read with DuckDB: {reason}") from exc
    finally:
        con.close()
    if counts is not None:
        table = _checked_counts(table, name, counts)
    return table


def _checked_counts(table: Any, name: str, counts: str) -> Any:
    """Raise for a missing, negative or fractional count; else the table with COUNT (int64)."""
    import math

    import pyarrow as pa

    missing = sum(v or 0 for v in table.column("__missing").to_pylist())
    if missing:
        raise errors.DataError(errors.BAD_COUNT.format(
            path=name, column=counts, what=f"{missing} missing value(s)", value="(empty)", where=""))
    mins = [v for v in table.column("__min").to_pylist() if v is not None]
    if mins and min(mins) < 0:
        raise errors.DataError(errors.BAD_COUNT.format(
            path=name, column=counts, what="a negative value", value=f"{min(mins):g}", where=""))
    fractions = [v for v in table.column("__fraction").to_pylist() if v is not None]
    if fractions:
        raise errors.DataError(errors.BAD_COUNT.format(
            path=name, column=counts, what="a fractional value", value=f"{fractions[0]:g}", where=""))
    sums = table.column("__sum").to_pylist()
    if any(s is not None and (s > 2.0**53 or math.isinf(s)) for s in sums):
        raise errors.DataError(errors.BAD_COUNT.format(
            path=name, column=counts, what="a sum too large to be exact", value=f"{max(sums):g}", where=""))
    keep = [c for c in table.column_names if not c.startswith("__")]
    out = table.select(keep)
    return out.append_column(COUNT, pa.array([int(s) for s in sums], type=pa.int64()))
