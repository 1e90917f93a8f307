"""``fairfix report``: an audit or a before/after comparison as a self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairfix.cli import _output
from fairfix.cli._errors import handle_errors

SOURCE_HELP = "fairfix.audit/1 or fairfix.compare/1 JSON, or a bundle directory (its compare.json)."


@handle_errors
def report(
    source: Annotated[Path, typer.Argument(metavar="SOURCE", help=SOURCE_HELP)],
    html: Annotated[Path, typer.Option("--html", help="Write the page to FILE atomically.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite --html if it exists.")] = False,
) -> None:
    """Render an audit or a comparison as one HTML page: plots, tables, gates."""
    # Imported here: matplotlib (optional) must never load for the other commands.
    from fairfix.report.html import load_document, render_html
    from fairfix.report.io import check_writable

    check_writable(html, force, inputs=[source])  # fail before any work
    doc = load_document(source)
    name = source.resolve().name
    page = render_html(doc, source=name if source.is_file() else f"{name}/compare.json")
    _output.emit(page, html, force)
