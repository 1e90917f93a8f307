"""``fairfix.predict``: score a table with a model and stream the result to a file."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fairfix import errors
from fairfix.data.tables import infer_format, open_table
from fairfix.models.base import Model
from fairfix.models.runner import iter_predictions
from fairfix.report.io import _umask, check_writable, write_error


def prediction_columns(model: Model, proba: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """``score`` (binary: P(positive)) or ``score_<class>`` per class, and ``pred``.

    A binary model predicts the positive class when ``score >= threshold``,
    exactly as ``fairfix audit --score score --threshold T`` would.
    """
    cols: dict[str, Any] = {}
    if model.positive_index is not None:
        score = proba[:, model.positive_index]
        negative = next(c for c in model.classes if c != model.positive)
        cols["score"] = score
        cols["pred"] = np.where(score >= threshold, model.positive, negative)
    else:
        for j, c in enumerate(model.classes):
            cols[f"score_{c}"] = proba[:, j]
        cols["pred"] = np.asarray(model.classes)[proba.argmax(axis=1)]
    return cols


def checked_threshold(model: Model, threshold: float | None) -> float:
    """``threshold`` (default 0.5) for a binary model; a threshold on a multiclass model is exit 2."""
    if threshold is not None and model.positive_index is None:
        raise errors.UsageError(
            f"--threshold applies to a binary model; {model.path or 'the model'} has {len(model.classes)} classes "
            "(multiclass predictions are the most probable class)"
        )
    threshold = 0.5 if threshold is None else float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise errors.UsageError(f"--threshold {threshold:g}: must lie in [0, 1]")
    return threshold


class _Writer:
    """Append record batches to a CSV, Parquet or JSON Lines file."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = path, fmt
        self._w: Any = None
        self._fh: Any = None

    def write(self, table: Any) -> None:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            if self._w is None:
                self._w = pq.ParquetWriter(str(self.path), table.schema)
            self._w.write_table(table)
        elif self.fmt == "csv":
            import pyarrow.csv as pcsv

            if self._w is None:
                self._w = pcsv.CSVWriter(str(self.path), table.schema)
            self._w.write_table(table)
        else:
            import json

            if self._fh is None:
                self._fh = open(self.path, "w", encoding="utf-8")
            for row in table.to_pylist():
                self._fh.write(json.dumps(row, allow_nan=False) + "\n")

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
        if self._fh is not None:
            self._fh.close()


def output_columns(model: Model) -> list[str]:
    """The columns a model's predictions add to a row: scores, ``pred``, then its extras (risk, corrected...)."""
    names = [f"score_{c}" for c in model.classes] if model.positive_index is None else ["score"]
    return [*names, "pred", *model.extra_outputs]


def kept_columns(table: Any, model: Model, *, id_column: str | None, keep: Sequence[str] = (),
                 keep_all: bool = False) -> list[str]:
    """The input columns carried into the output (``--keep COL``, ``--keep-all``), checked.

    Raises
    ------
    fairfix.errors.DataError
        A ``--keep`` column the table lacks (naming it and the file).
    fairfix.errors.UsageError
        A kept column named like an output column (``pred``, ``score``, ``risk``, ``corrected``, ``row``...).
    """
    keep = list(dict.fromkeys(keep))
    table.require(keep)
    cols = list(table.columns) if keep_all else keep
    cols = [c for c in dict.fromkeys(cols) if c != id_column]
    taken = [*output_columns(model), *(["row"] if id_column is None else [])]
    clash = [c for c in cols if c in taken]
    if clash:
        how = "--keep-all" if keep_all and clash[0] not in keep else f"--keep {clash[0]}"
        raise errors.UsageError(f"{how}: {table.name} has a column {clash[0]!r}, which predict writes itself "
                                f"(output columns: {', '.join(taken)}); rename it or leave it out")
    return cols


def prediction_batches(
    table: Any,
    model: Model,
    *,
    id_column: str | None = None,
    threshold: float = 0.5,
    keep: Sequence[str] = (),
    batch_rows: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Iterator[Any]:
    """Predictions as pyarrow Tables, batch by batch: ``id_column`` (else ``row``), ``keep``, then the rest.

    The rest: :func:`output_columns`.  ``fairfix predict``'s file and the Python API's frame are these batches.
    """
    import pyarrow as pa

    if id_column is not None:
        table.require([id_column])
    carried = [*([id_column] if id_column else []), *keep]
    rows = 0
    for batch, proba, extras in iter_predictions(table, model, extra_columns=carried, batch_rows=batch_rows,
                                                 progress=progress):
        cols: dict[str, Any] = {}
        if id_column is None:
            cols["row"] = pa.array(np.arange(rows, rows + batch.num_rows, dtype=np.int64))
        for name in carried:
            values = batch.column(name)
            cols[name] = values.dictionary_decode() if pa.types.is_dictionary(values.type) else values
        cols.update({k: pa.array(v) for k, v in prediction_columns(model, proba, threshold).items()})
        cols.update({k: pa.array(v) for k, v in extras.items()})
        yield pa.table(cols)
        rows += batch.num_rows


def predict(
    data: Any,
    model: Model,
    output: str | os.PathLike[str],
    *,
    id_column: str | None = None,
    threshold: float | None = None,
    keep: Sequence[str] = (),
    keep_all: bool = False,
    batch_rows: int | None = None,
    input_format: str | None = None,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> dict[str, Any]:
    """Score every row of ``data`` and write ``id``/``row``, kept columns, ``score``, ``pred`` to ``output``.

    The output format follows its extension (``.csv``, ``.parquet``, ``.jsonl``,
    optionally compressed is not supported for output).  Rows are streamed, so
    the input may be larger than memory; the file appears only when complete.
    ``keep`` (``--keep``) and ``keep_all`` (``--keep-all``) carry input columns into it, so
    that ``fairfix audit OUTPUT --label ... --group ...`` needs no join.
    """
    out = check_writable(output, force, inputs=[data])
    fmt = infer_format(str(out))
    threshold, table, kept = _prepare(data, model, id_column, threshold, keep, keep_all, input_format)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
    except OSError as exc:
        raise errors.UsageError(errors.OUTPUT_UNWRITABLE.format(path=out, reason=exc.strerror or exc)) from exc
    tmp = Path(tmp_name)
    # like every file fairfix writes: the mode of the file it replaces, else 0o666 less the umask (not 0o600)
    perms = stat.S_IMODE(out.stat().st_mode) if out.exists() else 0o666 & ~_umask()
    writer = _Writer(tmp, fmt)
    rows = 0
    try:
        for part in prediction_batches(table, model, id_column=id_column, threshold=threshold, keep=kept,
                                       batch_rows=batch_rows, progress=progress):
            writer.write(part)
            rows += part.num_rows
        writer.close()
        if rows == 0:
            raise errors.DataError(f"{table.name}: has a header but no rows")
        if not force and out.exists():
            raise errors.OutputExistsError(errors.OUTPUT_EXISTS.format(path=out))
        os.chmod(tmp, perms)
        os.replace(tmp, out)
    except BaseException as exc:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        tmp.unlink(missing_ok=True)
        failed = write_error(out, exc)  # disk full, read-only: exit 2 naming the output, not exit 3
        if failed is not None:
            raise failed from exc
        raise
    return {"rows": rows, "output": str(out), "format": fmt}


def _prepare(data: Any, model: Model, id_column: str | None, threshold: float | None, keep: Sequence[str],
             keep_all: bool, input_format: str | None) -> tuple[float, Any, list[str]]:
    """The checked threshold, the opened table and the kept columns, before any row is scored."""
    threshold = checked_threshold(model, threshold)
    table = open_prediction_input(data, input_format)
    if id_column is not None:
        table.require([id_column])
    return threshold, table, kept_columns(table, model, id_column=id_column, keep=keep, keep_all=keep_all)


def open_prediction_input(data: Any, input_format: str | None = None) -> Any:
    """The table to score: a path, ``-``, an embedded name (``adult:test``), a DataFrame or a pyarrow Table."""
    from fairfix.data.frames import embedded_table

    if isinstance(data, str) and (emb := embedded_table(data)) is not None:
        data = emb
    return open_table(data, input_format)


def predict_frame(
    data: Any,
    model: Model,
    *,
    id_column: str | None = None,
    threshold: float | None = None,
    keep: Sequence[str] = (),
    keep_all: bool = False,
    batch_rows: int | None = None,
    input_format: str | None = None,
) -> Any:
    """The rows :func:`predict` would write, as a pandas DataFrame (the Python API's ``Model.predict``)."""
    import pyarrow as pa

    threshold, table, kept = _prepare(data, model, id_column, threshold, keep, keep_all, input_format)
    parts = list(prediction_batches(table, model, id_column=id_column, threshold=threshold, keep=kept,
                                    batch_rows=batch_rows))
    if not parts:
        raise errors.DataError(f"{table.name}: has a header but no rows")
    return pa.concat_tables(parts).to_pandas()
