"""Options shared by every command that loads a model."""

from __future__ import annotations

from typing import Annotated, Any

import typer

ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Model directory (fairfix or Hugging Face) or state dict (with --factory)."
)]
FactoryOpt = Annotated[str | None, typer.Option(
    "--factory", help="package.module:function that builds the torch module for a state dict."
)]
FeaturesOpt = Annotated[str | None, typer.Option("--features", help="Comma-separated input columns.")]
TextColumnOpt = Annotated[str | None, typer.Option("--text-column", help="Text column of a Hugging Face model.")]


def split_columns(value: str | None) -> list[str] | None:
    """``"a,b , c"`` -> ``["a", "b", "c"]``; None stays None."""
    if value is None:
        return None
    cols = [c.strip() for c in value.split(",") if c.strip()]
    return cols or None


def load(path: str, factory: str | None, features: str | None, text_column: str | None) -> Any:
    """Load a model the way every command does (torch is imported here, not before)."""
    from fairfix.models import load_model

    return load_model(path, factory=factory, features=split_columns(features), text_column=text_column)


def refuse_bundle(path: str, option: str) -> None:
    """Exit 2 when ``path`` is a FairNet bundle where a base model is needed (``correct --model``).

    A bundle's adapter was trained for its base model; correcting the bundle again would
    stack a second correction on a gate it does not know, so the line names the base to pass.
    """
    from fairfix import errors
    from fairfix.artifacts import bundle_base_path

    base = bundle_base_path(path)
    if base is not None:
        raise errors.UsageError(
            f"{option} {path}: is a FairNet bundle, not a base model; pass the bundle's base model instead "
            f"({option} {base or 'BASE_MODEL'})"
        )


def warn_filled(model: Any, source: str) -> None:
    """One warning line when the model filled missing numeric inputs (tabular: the training mean)."""
    from fairfix.cli import _output
    from fairfix.report.render import printable

    base = getattr(model, "base", model)
    filled = dict(getattr(base, "missing_filled", None) or {})
    if filled:
        cols = ", ".join(f"{printable(c)!r} ({n})" for c, n in filled.items())
        _output.warn(f"{source}: {sum(filled.values())} missing numeric input value(s) filled with the training "
                     f"mean: {cols}; the predictions of those rows rest on imputed inputs")
