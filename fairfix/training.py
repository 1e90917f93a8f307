"""``fairfix.train_model``: pick features, train the baseline, write the model directory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairfix import errors
from fairfix.artifacts import data_fingerprint

if TYPE_CHECKING:
    from torch import nn

    from fairfix.models.base import Model


def select_features(
    columns: Sequence[str],
    *,
    label: str,
    features: Sequence[str] | str | None = None,
    exclude: Sequence[str] = (),
    groups: Sequence[str] = (),
) -> list[str]:
    """The input columns: ``features`` if given, else every column but the label, ``exclude`` and ``groups``.

    Sensitive (group) columns are left out by default; naming them in ``features`` keeps them.
    ``features`` may hold glob patterns (``p*``, ``x[0-9]``), expanded in column order,
    and may be one comma-separated string; a name that is a column is taken literally.
    """
    features = expand_columns(columns, features) if features else None
    for col in [*exclude, *groups]:
        if col not in columns:
            raise errors.DataError(f"no column {col!r}; columns are: {', '.join(map(repr, columns))}")
    if features:
        if label in features:
            raise errors.UsageError(f"--features names the label column {label!r}")
        return features
    chosen = [c for c in columns if c != label and c not in exclude and c not in groups]
    if not chosen:
        raise errors.UsageError("no feature columns left after removing the label, --exclude and --group columns")
    return chosen


def expand_columns(columns: Sequence[str], names: Sequence[str] | str) -> list[str]:
    """Column names and glob patterns -> columns (patterns in column order; no repeats).

    Raises
    ------
    fairfix.errors.DataError
        A name that is not a column, or a pattern that matches none.
    """
    import fnmatch

    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out: list[str] = []
    for name in names:
        if name in columns or not any(ch in name for ch in "*?["):
            if name not in columns:
                raise errors.DataError(f"no column {name!r}; columns are: {', '.join(map(repr, columns))}")
            out.append(name)
            continue
        matched = [c for c in columns if fnmatch.fnmatchcase(str(c), name)]
        if not matched:
            raise errors.DataError(f"no column matches the pattern {name!r}; columns are: "
                                   f"{', '.join(map(repr, columns))}")
        out.extend(matched)
    return list(dict.fromkeys(out))


@dataclass
class Trained:
    """A model trained in memory and what its manifest will record (:func:`fit_model`)."""

    model: Model
    config: dict[str, Any]
    training: dict[str, Any]
    groups: list[str]


def fit_model(
    data: Any,
    *,
    label: str,
    features: Sequence[str] | str | None = None,
    exclude: Sequence[str] = (),
    groups: Sequence[str] = (),
    text_column: str | None = None,
    factory: str | nn.Module | None = None,
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
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    steps: int | None = None,
    eval_every: int | None = None,
) -> Trained:
    """Train the ERM baseline on ``data`` in memory (:func:`train_model` also writes it).

    A tabular MLP by default; a Hugging Face text classifier fine-tuned from the
    local directory ``base_model`` when ``text_column`` is given; the torch module
    that ``factory`` (``package.module:function``, or an ``nn.Module`` whose copies are
    trained) builds, fed the numeric ``features`` as they are, when ``factory`` is given
    (``hidden`` and ``dropout`` shape the MLP only).

    The MLP's and a factory module's budget: ``epochs`` passes over the rows when given,
    else ``steps`` optimizer steps (default 2,000, evaluated every ``eval_every`` = 100 steps
    for early stopping), whatever the table's size: 30 epochs of 256-row batches gave a
    720-row table 90 steps (DESIGN.md section 1, step 6).  Text models keep ``epochs`` /
    ``max_steps``.
    """
    from dataclasses import asdict

    from fairfix.data.frames import embedded_file, read_frame

    if text_column is not None and factory is not None:
        raise errors.UsageError("--factory and --text-column are different model kinds; give one")
    frame = read_frame(data, None, input_format)
    model: Model
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
    elif factory is not None:
        from fairfix.models.erm import ErmConfig
        from fairfix.models.factory import train_factory

        used = select_features(list(frame.columns), label=label, features=features, exclude=exclude, groups=groups)
        erm = ErmConfig(batch_size=batch_size or 256, lr=lr or 1e-3, val_fraction=val_fraction, patience=patience,
                        seed=seed, **_budget(epochs, steps, eval_every))
        model, info = train_factory(frame, label=label, features=used, factory=factory, config=erm,
                                    positive=positive, progress=progress)
        config = asdict(erm)
    else:
        from fairfix.models.tabular import TrainConfig, train_tabular

        used = select_features(list(frame.columns), label=label, features=features, exclude=exclude, groups=groups)
        cfg = TrainConfig(hidden=list(hidden), dropout=dropout, batch_size=batch_size or 256, lr=lr or 1e-3,
                          val_fraction=val_fraction, patience=patience, seed=seed,
                          **_budget(epochs, steps, eval_every))
        model, info = train_tabular(frame, label=label, features=used, config=cfg, positive=positive,
                                    progress=progress)
        config = asdict(cfg)
    config.update({"label": label, "features": used, "excluded": list(exclude),
                   "sensitive_columns": list(groups)})
    return Trained(model, config, {"data": fp, **info}, list(groups))


def save_trained(trained: Trained, out: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Write a model from :func:`fit_model` to ``out``; return ``fairfix train``'s summary."""
    from fairfix.artifacts import read_manifest

    model, info = trained.model, trained.training
    model.save(out, config=trained.config, training=info, force=force)  # type: ignore[attr-defined]
    manifest = read_manifest(out)  # the digest the written files give: the saved model is that artifact
    model.path, model.digest, model.manifest = Path(out), manifest["digest"], manifest
    return train_summary(trained, out, manifest)


def train_summary(trained: Trained, out: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """``fairfix train``'s summary of a model saved at ``out`` (its manifest)."""
    model, info, used = trained.model, trained.training, trained.config["features"]
    history = info.get("history")
    return {
        "model": str(out),
        "kind": model.kind,
        "rows": info["data"]["rows"],
        "features": used,
        "sensitive_columns_excluded": [g for g in trained.groups if g not in used],
        "classes": model.classes,
        "positive": model.positive,
        "epochs_run": info.get("epochs_run"),
        "best_epoch": info.get("best_epoch"),
        "val_accuracy": history[info.get("best_epoch", 1) - 1].get("val_accuracy") if history else None,
        "files": manifest["files"],
    }


def train_model(data: Any, *, out: str | Path, force: bool = False, **options: Any) -> dict[str, Any]:
    """Train the ERM baseline on ``data`` (:func:`fit_model`'s options) and save it to ``out``; return a summary."""
    return save_trained(fit_model(data, **options), out, force=force)


#: ``fairfix train``'s budget when neither epochs nor steps are given: optimizer steps, and the
#: steps between the evaluations that early stopping reads.
DEFAULT_STEPS, DEFAULT_EVAL_EVERY = 2000, 100


def _budget(epochs: int | None, steps: int | None, eval_every: int | None) -> dict[str, Any]:
    """ErmConfig's budget fields: ``epochs`` passes when given, else ``steps`` (default 2,000)."""
    if epochs is not None and steps is not None:
        raise errors.UsageError("--epochs and --steps both set the budget; give one")
    if epochs is not None:
        return {"epochs": epochs, "eval_every": eval_every}
    return {"epochs": None, "steps": steps or DEFAULT_STEPS, "eval_every": eval_every or DEFAULT_EVAL_EVERY}
