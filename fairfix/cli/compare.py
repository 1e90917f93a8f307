"""``fairfix compare``: two audits side by side; gates on deltas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairfix.cli import _options, _output
from fairfix.cli._errors import EXIT_GATE, handle_errors
from fairfix.report.render import Format


@handle_errors
def compare(
    before: Annotated[Path, typer.Argument(help="fairfix.audit/1 JSON of the base model.")],
    after: Annotated[Path, typer.Argument(help="fairfix.audit/1 JSON of the corrected model.")],
    fail_on: Annotated[list[str] | None, typer.Option(
        "--fail-on", help="Exit 1 when e.g. 'delta.worst_group_accuracy<0' holds (delta./before./after. KEY)."
    )] = None,
    fmt: Annotated[Format | None, typer.Option("--format", help="Output format.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result to FILE atomically.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output (and --junit) if it exists.")] = False,
    junit: _options.JunitOpt = None,
) -> None:
    """Compare two audits (fairfix.compare/1); exit 1 when a --fail-on gate trips."""
    from fairfix.report.compare import build_compare, read_audit

    if output is not None:
        from fairfix.report.io import check_writable

        check_writable(output, force, inputs=[before, after])
    _options.check_junit(junit, force, [before, after], {"--output": output})
    docs = [read_audit(before), read_audit(after)]  # both read before either is compared
    doc = build_compare(docs[0], docs[1], fail_on=fail_on or ())
    for line in doc.get("warnings") or []:  # other rows, groups or positive label: said before the result
        _output.warn(f"{before} vs {after}: {line}")
    _output.emit_compare(doc, fmt, output, force)
    if junit is not None:
        from fairfix.report.junit import compare_suite

        _options.write_junit(junit, [compare_suite(doc)], force)
    tripped = [g for g in doc["gates"] if g["tripped"]]
    for g in doc["gates"]:
        if g["tripped"]:
            _output.error(f"gate tripped: {g['expr']} (value {g['value']:.4g})")
        elif g["insufficient_evidence"]:
            _output.warn(f"gate passed without sufficient evidence: {g['expr']}: {'; '.join(g.get('reasons', []))}")
    if tripped:
        raise typer.Exit(EXIT_GATE)
