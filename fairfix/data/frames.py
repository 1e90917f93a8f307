"""Whole tables in memory (for training), and the embedded datasets' names.

Training needs every row at once, so it reads with pyarrow's non-streaming
readers (type inference over the whole file) and hands pandas a DataFrame.
"""

from __future__ import annotations

import os
from typing import Any

from fairfix import errors

#: Embedded dataset names -> (dataset, split).  ``adult`` is UCI Adult (files in
#: fairfix/datasets); ``digits_color`` is generated from scikit-learn's bundled
#: digits (fairfix/datasets/digits_color.py); ``wordnet_shortcut`` from WordNet 3.0's noun glosses
#: (fairfix/datasets/wordnet.py; Debian's wordnet-base).
EMBEDDED = {
    "adult:train": ("adult", "train"),
    "adult:test": ("adult", "test"),
    "digits_color:train": ("digits_color", "train"),
    "digits_color:test": ("digits_color", "test"),
    "wordnet_shortcut:train": ("wordnet_shortcut", "train"),
    "wordnet_shortcut:test": ("wordnet_shortcut", "test"),
}


def embedded_table(name: str) -> Any:
    """The embedded dataset ``name`` (e.g. ``adult:train``) as a pyarrow Table, or None.

    A file of that name in the working directory wins over the embedded data.
    """
    if name not in EMBEDDED or os.path.exists(name):
        return None
    import pyarrow as pa

    dataset, split = EMBEDDED[name]
    if dataset == "adult":
        from fairfix.datasets import load_adult

        frame = load_adult(split)
    elif dataset == "wordnet_shortcut":
        from fairfix.datasets.wordnet import load_wordnet_shortcut

        frame = load_wordnet_shortcut(split)
    else:
        from fairfix.datasets.digits_color import load_digits_color

        frame = load_digits_color(split)
    return pa.Table.from_pandas(frame, preserve_index=False)


def embedded_file(name: str) -> str | None:
    """Path of the file behind an embedded dataset name (for data fingerprints).

    None for names that are not embedded and for the coloured digits (generated from
    scikit-learn's digits: the name identifies them); WordNet's data.noun for the text task.
    """
    if name not in EMBEDDED or os.path.exists(name):
        return None
    dataset, split = EMBEDDED[name]
    if dataset == "wordnet_shortcut":
        from fairfix.datasets.wordnet import data_noun

        return str(data_noun())
    if dataset != "adult":
        return None
    from fairfix.datasets import path

    return str(path("adult.data.gz" if split == "train" else "adult.test.gz"))


def read_frame(data: Any, columns: list[str] | None = None, input_format: str | None = None) -> Any:
    """A pandas DataFrame of ``data`` (path, ``-``, embedded name, DataFrame or pyarrow Table).

    Raises
    ------
    fairfix.errors.DataError
        Missing/empty/unparseable file, or an absent column (named, with the columns that exist).
    """
    import pyarrow as pa

    from fairfix.data.tables import NULL_VALUES, _no_rows, _wrap_arrow, open_table

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
        try:
            result = _wrap_arrow(table, lambda: pcsv.read_csv(
                stream,
                read_options=table.csv_read_options(),
                parse_options=pcsv.ParseOptions(delimiter=table.delimiter),
                convert_options=pcsv.ConvertOptions(include_columns=columns, null_values=NULL_VALUES,
                                                    strings_can_be_null=True),
            ))
        except errors.DataError as exc:
            if _no_rows(exc):
                raise errors.DataError(f"{table.name}: has a header but no rows") from None
            raise
        finally:
            stream.close()
    else:
        batches = list(table.iter_batches(columns or table.columns))
        result = pa.Table.from_batches(batches) if batches else None
        if result is None:
            raise errors.DataError(f"{table.name}: has a header but no rows")
    if result.num_rows == 0:
        raise errors.DataError(f"{table.name}: has a header but no rows")
    frame = result.to_pandas()
    frame.attrs[SOURCE] = table.name  # pandas carries it through row and column selections
    return frame


#: Key of ``DataFrame.attrs`` naming the file a frame was read from (errors found later name it).
SOURCE = "fairfix_source"


def source_name(frame: Any) -> str:
    """The file ``frame`` was read from (``read_frame``), else ``<DataFrame>``."""
    return str(getattr(frame, "attrs", {}).get(SOURCE) or "<DataFrame>")


def not_numeric(frame: Any, column: str) -> errors.DataError:
    """Exit 2 naming the file, the column and its first value that is not a number."""
    import pandas as pd

    values = frame[column]
    bad = values[pd.to_numeric(values, errors="coerce").isna() & values.notna()]
    value = str(bad.iloc[0]) if len(bad) else "?"
    return errors.DataError(errors.NOT_NUMERIC.format(path=source_name(frame), column=column, value=value[:80]))
