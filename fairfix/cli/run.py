"""``fairfix run``: a YAML recipe end to end, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairfix.cli import _output
from fairfix.cli._errors import EXIT_GATE, handle_errors
from fairfix.report.render import Format


@handle_errors
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe file (YAML); see docs/recipes.md.")],
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default: runs/<recipe name>).")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Stop after this step: train, audit_before, detect, correct, audit_after, compare."
    )] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Rerun every step, even those whose inputs are unchanged."
    )] = False,
    check: Annotated[bool, typer.Option("--check", help="Only validate the recipe.")] = False,
    fmt: Annotated[Format | None, typer.Option("--format", help="Output format of the comparison.")] = None,
) -> None:
    """Run train -> audit -> detect -> correct -> audit -> compare; exit 1 when a recipe gate trips."""
    from fairfix.recipes import load_recipe, run_recipe

    rec = load_recipe(recipe)
    if check:
        _output.note(f"{recipe}: valid recipe {rec.name!r}")
        return
    out = out or Path("runs") / rec.name
    with _output.StageProgress() as progress:
        result = run_recipe(rec, out, until=until, force=force, progress=progress, log=_output.note)
    if "compare" not in result:
        _output.note(f"stopped after {until}; rerun without --until to finish (finished steps are skipped)")
        return
    doc = result["compare"]
    _output.emit_compare(doc, fmt, None, False)
    tripped = [g for g in [*result["audit_gates"], *doc["gates"]] if g["tripped"]]
    for g in tripped:
        _output.error(f"gate tripped: {g['expr']} (value {g['value']:.4g})")
    _output.note(f"artifacts and reports in {out}")
    if tripped:
        raise typer.Exit(EXIT_GATE)
