"""``fairfix.train_model``: pick features, train the baseline, write the model directory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fairfix import errors
from fairfix.artifacts import data_fingerprint


def select_features(
    columns: Sequence[str],
    *,
    label: str,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    groups: Sequence[str] = (),
) -> list[str]:
    """The input columns: ``features`` if given, else every column but the label, ``exclude`` and ``groups``.

    Sensitive (group) columns are left out by default; naming them in ``features`` keeps them.
    """
    for col in [*exclude, *groups, *(features or [])]:
        if col not in columns:
            raise errors.DataError(f"no column {col!r}; columns are: {', '.join(map(repr, columns))}")
    if features:
        if label in features:
            raise errors.UsageError(f"--features names the label column {label!r}")
        return list(dict.fromkeys(features))
    chosen = [c for c in columns if c != label and c not in exclude and c not in groups]
    if not chosen:
        raise errors.UsageError("no feature columns left after removing the label, --exclude and --group columns")
    return chosen


def train_model(
    data: Any,
    *,
    label: str,
    out: str | Path,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    groups: Sequence[str] = (),
    text_column: str | None = None,
    base_model: str | Path | None = None,
    positive: Any = None,
    hidden: Sequence[int] = (128, 64),
    dropout: float = 0.1,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    val_fraction: float = 0.1,
    patience: int = 4,
    max_length: int = 128,
    max_steps: int | None = None,
    seed: int = 0,
    input_format: str | None = None,
    force: bool = False,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train the ERM baseline on ``data`` and save it to ``out``; return a summary.

    A tabular MLP by default; a Hugging Face text classifier fine-tuned from the
    local directory ``base_model`` when ``text_column`` is given.
    """
    from fairfix.data.frames import embedded_file, read_frame

    frame = read_frame(data, None, input_format)
    if label not in frame.columns:
        raise errors.DataError(f"no column {label!r}; columns are: {', '.join(map(repr, frame.columns))}")
    fp = data_fingerprint(embedded_file(data) or data if isinstance(data, str) else data)
    fp["rows"] = int(len(frame))
    if text_column is not None:
        if base_model is None:
            raise errors.UsageError("--text-column needs --base-model PATH (a local Hugging Face model)")
        if text_column not in frame.columns:
            raise errors.DataError(f"no column {text_column!r}; columns are: {', '.join(map(repr, frame.columns))}")
        from fairfix.models.hf import train_text

        model, info = train_text(
            frame, label=label, text_column=text_column, base_model=base_model,
            max_length=max_length, epochs=epochs or 1, batch_size=batch_size or 16, lr=lr or 5e-5,
            seed=seed, max_steps=max_steps, progress=progress,
        )
        config = {"text_column": text_column, "base_model": str(base_model), "max_length": max_length,
                  "epochs": epochs or 1, "batch_size": batch_size or 16, "lr": lr or 5e-5, "seed": seed,
                  "max_steps": max_steps}
        used = [text_column]
    else:
        from fairfix.models.tabular import TrainConfig, train_tabular

        used = select_features(list(frame.columns), label=label, features=features, exclude=exclude, groups=groups)
        cfg = TrainConfig(hidden=list(hidden), dropout=dropout, epochs=epochs or 30,
                          batch_size=batch_size or 256, lr=lr or 1e-3, val_fraction=val_fraction,
                          patience=patience, seed=seed)
        model, info = train_tabular(frame, label=label, features=used, config=cfg, positive=positive,
                                    progress=progress)
        from dataclasses import asdict

        config = asdict(cfg)
    config.update({"label": label, "features": used, "excluded": list(exclude),
                   "sensitive_columns": list(groups)})
    manifest = model.save(out, config=config, training={"data": fp, **info}, force=force)
    return {
        "model": str(out),
        "kind": model.kind,
        "rows": fp["rows"],
        "features": used,
        "sensitive_columns_excluded": [g for g in groups if g not in used],
        "classes": model.classes,
        "positive": model.positive,
        "epochs_run": info.get("epochs_run"),
        "best_epoch": info.get("best_epoch"),
        "val_accuracy": (info.get("history") or [{}])[info.get("best_epoch", 1) - 1].get("val_accuracy")
        if info.get("history") else None,
        "files": manifest["files"],
    }
