"""Write confusion counts as a counts table (``--counts-out``), the public format of docs/scale.md.

One row per observed (group columns..., label, prediction) cell with its number
of rows, in the order of :class:`~fairfix.metrics.counts.ConfusionCounts`; a
missing group value (``--keep-missing-groups``) is written as null.  Auditing
the table with ``--counts`` gives the report of the rows it came from.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from fairfix import errors
from fairfix.metrics.counts import MISSING, ConfusionCounts
from fairfix.report.io import _umask, check_writable

COUNTS_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def counts_format(path: str | os.PathLike[str]) -> str:
    """``parquet`` or ``csv`` from the extension of a ``--counts-out`` path."""
    ext = Path(path).suffix.lower()
    if ext not in COUNTS_FORMATS:
        raise errors.UsageError(f"--counts-out {path}: use a .parquet or .csv file name")
    return COUNTS_FORMATS[ext]


def _unique(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    return name


def counts_table(
    counts: ConfusionCounts, *, label: str, prediction: str = "pred", count: str = "n"
) -> Any:
    """The counts as a pyarrow Table: group columns, ``label``, ``prediction``, ``count``.

    ``prediction`` and ``count`` get a trailing ``_`` when they would clash with a group
    or the label column.
    """
    import numpy as np
    import pyarrow as pa

    taken = {*counts.group_columns, label}
    prediction = _unique(prediction, taken)
    count = _unique(count, taken | {prediction})
    g, i, j = np.nonzero(counts.counts)
    columns: dict[str, list[Any]] = {}
    for k, col in enumerate(counts.group_columns):
        columns[col] = [None if counts.groups[gi][k] == MISSING else counts.groups[gi][k] for gi in g.tolist()]
    columns[label] = [counts.classes[x] for x in i.tolist()]
    columns[prediction] = [counts.classes[x] for x in j.tolist()]
    arrays = {name: _array(values) for name, values in columns.items()}
    arrays[count] = pa.array(counts.counts[g, i, j], type=pa.int64())
    return pa.table(arrays)


def _array(values: list[Any]) -> Any:
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: text keeps every value
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def write_counts(path: str | os.PathLike[str], table: Any, force: bool = False) -> None:
    """Write ``table`` as Parquet or CSV (by extension) atomically: a temporary sibling, then a rename."""
    fmt = counts_format(path)
    p = check_writable(path, force)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        os.close(fd)
    except OSError as exc:
        raise errors.UsageError(errors.OUTPUT_UNWRITABLE.format(path=p, reason=exc.strerror or exc)) from exc
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        if not force and p.exists():
            raise errors.OutputExistsError(errors.OUTPUT_EXISTS.format(path=p))
        os.replace(tmp, p)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise errors.UsageError(errors.OUTPUT_UNWRITABLE.format(path=p, reason=exc.strerror or exc)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
