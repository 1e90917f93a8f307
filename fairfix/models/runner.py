"""Run a model over a table in batches (shared by `predict` and `audit --model`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from fairfix import errors
from fairfix.models.base import Model


def frame_of(batch: Any, columns: Sequence[str]) -> Any:
    """A pandas DataFrame of ``columns`` from a record batch; categoricals as plain objects."""
    import pandas as pd

    frame = batch.select(list(columns)).to_pandas()
    for col in frame.columns:
        if isinstance(frame[col].dtype, pd.CategoricalDtype):
            frame[col] = frame[col].astype(object)
    return frame


def iter_predictions(
    table: Any,
    model: Model,
    *,
    extra_columns: Sequence[str] = (),
    categorical: Sequence[str] = (),
    batch_rows: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Iterator[tuple[Any, np.ndarray]]:
    """Yield ``(record batch, class probabilities (B, C))`` over the whole table.

    The batch holds the model's input columns and ``extra_columns``.
    """
    table.require(model.input_columns)
    cols = list(dict.fromkeys([*model.input_columns, *extra_columns]))
    numeric = list(getattr(model, "numeric_columns", []))
    done = 0
    for batch in table.iter_batches(
        cols,
        batch_rows=batch_rows or model.batch_rows,
        categorical=[c for c in categorical if c not in model.input_columns],
        numeric=numeric,
    ):
        if batch.num_rows == 0:
            continue
        try:
            proba = model.predict_proba(frame_of(batch, model.input_columns))
        except errors.FairfixError as exc:
            raise type(exc)(f"{table.name}: {exc}") from exc
        done += batch.num_rows
        yield batch, proba
        if progress is not None:
            progress(done, table.num_rows)
