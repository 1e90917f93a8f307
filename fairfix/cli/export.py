"""``fairfix export``: a bundle whose adapter is on for every row, as a plain model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairfix.cli import _model, _options, _output
from fairfix.cli._errors import handle_errors


@handle_errors
def export(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory from `fairfix correct` (gate all).")],
    out: Annotated[Path, typer.Option("--out", help="Model directory to create (the base model's kind).")],
    base: Annotated[Path | None, typer.Option(
        "--base", help="The bundle's base model, where its recorded path is not the one to use.")] = None,
    factory: _model.FactoryOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it is a fairfix artifact.")] = False,
    quiet: _options.QuietOpt = False,
) -> None:
    """Merge the LoRA of a bundle whose adapter is on for every row into its base model's weights."""
    from fairfix.export import export_bundle

    manifest = export_bundle(bundle, out, base=base, factory=factory, force=force)
    merged = manifest.get("merged_from") or {}
    _output.note(f"merged the adapter of {bundle} ({len(merged.get('targets') or [])} layer(s)) into "
                 f"{manifest.get('model_kind')} weights; wrote {out} (fairfix predict --model {out})")
