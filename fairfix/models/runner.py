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
) -> Iterator[tuple[Any, np.ndarray, dict[str, np.ndarray]]]:
    """Yield ``(record batch, class probabilities (B, C), extra outputs)`` over the whole table.

    Extra outputs are per-row arrays such as a corrected model's ``risk`` and ``corrected``.

    The batch holds the model's input columns and ``extra_columns``.
    """
    table.require(model.input_columns)
    cols = list(dict.fromkeys([*model.input_columns, *extra_columns]))
    # Extra columns (predict's --id, audit's label/groups) keep their own type even when the
    # model also reads them as numbers: float64 parsing would turn CSV id 7 into 7.0.
    numeric = [c for c in getattr(model, "numeric_columns", []) if c not in extra_columns]
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
            proba, extras = model.predict_with_extras(frame_of(batch, model.input_columns))
        except errors.ModelError as exc:  # the model does not fit: name the model, not the data
            where = model.path or type(model).__name__
            raise type(exc)(f"{where}: {exc}") from exc
        except errors.FairfixError as exc:
            raise type(exc)(f"{table.name}: {exc}") from exc
        done += batch.num_rows
        yield batch, proba, extras
        if progress is not None:
            progress(done, table.num_rows)


def collect_representations(
    model: Model,
    frame: Any,
    layer: str | None = None,
    *,
    batch_rows: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> tuple[Any, Any, np.ndarray]:
    """Representations at ``layer`` for every row of a DataFrame, plus class probabilities.

    Returns ``(values, mask, proba)``: ``values`` is ``(N, D)``, or ``(N, T, D)``
    zero-padded to the longest sequence with ``mask (N, T)``; ``mask`` is None for
    vectors; ``proba`` is ``(N, C)``.  One forward pass per batch gives both.
    """
    import torch

    layer = layer or model.default_tap_layer
    model.check_layer(layer)
    step = batch_rows or model.batch_rows
    parts, masks, probas = [], [], []
    n = len(frame)
    for start in range(0, n, step):
        inputs = model.encode(frame.iloc[start : start + step])
        with torch.no_grad(), model.capture(layer) as store:
            logits = model.forward(inputs)
        values = store["out"].detach()
        parts.append(values)
        if values.dim() == 3:
            masks.append(inputs["attention_mask"].bool())
        probas.append(torch.softmax(logits.float(), dim=-1).double().numpy())
        if progress is not None:
            progress(min(start + step, n), n)
    if parts and parts[0].dim() == 3:
        t = max(p.shape[1] for p in parts)
        values = torch.cat([torch.nn.functional.pad(p, (0, 0, 0, t - p.shape[1])) for p in parts])
        mask = torch.cat([torch.nn.functional.pad(m, (0, t - m.shape[1])) for m in masks])
        return values, mask, np.concatenate(probas)
    return torch.cat(parts), None, np.concatenate(probas)
