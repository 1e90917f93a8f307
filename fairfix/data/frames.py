"""Whole tables in memory (for training), and the embedded datasets' names.

Training needs every row at once, so it reads with pyarrow's non-streaming
readers (type inference over the whole file) and hands pandas a DataFrame.
"""

from __future__ import annotations

import os
from typing import Any

from fairfix import errors

EMBEDDED = {"adult:train": "train", "adult:test": "test"}


def embedded_table(name: str) -> Any:
    """The embedded dataset ``adult:train`` / ``adult:test`` as a pyarrow Table, or None."""
    if name not in EMBEDDED or os.path.exists(name):
        return None
    import pyarrow as pa

    from fairfix.datasets import load_adult

    return pa.Table.from_pandas(load_adult(EMBEDDED[name]), preserve_index=False)


def embedded_file(name: str) -> str | None:
    """Path of the file behind an embedded dataset name (for data fingerprints)."""
    if name not in EMBEDDED or os.path.exists(name):
        return None
    from fairfix.datasets import path

    return str(path("adult.data.gz" if EMBEDDED[name] == "train" else "adult.test.gz"))


def read_frame(data: Any, columns: list[str] | None = None, input_format: str | None = None) -> Any:
    """A pandas DataFrame of ``data`` (path, ``-``, embedded name, DataFrame or pyarrow Table).

    Raises
    ------
    fairfix.errors.DataError
        Missing/empty/unparseable file, or an absent column (named, with the columns that exist).
    """
    import pyarrow as pa

    from fairfix.data.tables import NULL_VALUES, _wrap_arrow, open_table

    if isinstance(data, str) and (emb := embedded_table(data)) is not None:
        data = emb
    if type(data).__name__ == "DataFrame":
        frame = data
        missing = [c for c in columns or [] if c not in frame.columns]
        if missing:
            raise errors.DataError(errors.MISSING_COLUMN.format(
                path="<DataFrame>", column=missing[0], columns=", ".join(map(repr, frame.columns))))
        return frame
    table = open_table(data, input_format)
    if columns is not None:
        table.require(columns)
    if table.fmt == "csv":
        import pyarrow.csv as pcsv

        stream = table._source()
        result = _wrap_arrow(table, lambda: pcsv.read_csv(
            stream,
            parse_options=pcsv.ParseOptions(delimiter=table.delimiter),
            convert_options=pcsv.ConvertOptions(include_columns=columns, null_values=NULL_VALUES,
                                                strings_can_be_null=True),
        ))
    else:
        batches = list(table.iter_batches(columns or table.columns))
        result = pa.Table.from_batches(batches) if batches else None
        if result is None:
            raise errors.DataError(f"{table.name}: has a header but no rows")
    if result.num_rows == 0:
        raise errors.DataError(f"{table.name}: has a header but no rows")
    return result.to_pandas()
