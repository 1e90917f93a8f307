"""``fairfix report``: an audit or a before/after comparison as an HTML page and/or a model card section."""

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
    html: Annotated[Path | None, typer.Option("--html", help="Write the page to FILE atomically.")] = None,
    model_card: Annotated[Path | None, typer.Option(
        "--model-card", help="Write (or update in place, between fairfix's markers) the fairness section and "
                             "model-index of a Hugging Face model card (README.md).")] = None,
    model_name: Annotated[str | None, typer.Option(
        "--model-name", help="Name of the model in the card's model-index (default: the card's own, else the "
                             "bundle's or the card's folder name).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --html if it exists.")] = False,
) -> None:
    """Render an audit or a comparison as one HTML page, and/or as a fairness section of a model card."""
    from fairfix import errors
    from fairfix.report.html import load_document
    from fairfix.report.io import check_writable

    if html is None and model_card is None:
        raise errors.UsageError("give --html FILE, --model-card FILE, or both")
    if html is not None:
        check_writable(html, force, inputs=[source])  # fail before any work
    if model_card is not None:
        check_writable(model_card, True, inputs=[source])  # a card is updated in place: a regular file or none
        if html is not None and html.resolve() == model_card.resolve():
            raise errors.UsageError(f"--model-card {model_card}: is the --html file too")
    doc = load_document(source)
    if html is not None:
        # Imported here: matplotlib (optional) must never load for the other commands.
        from fairfix.report.html import render_html

        name = source.resolve().name
        page = render_html(doc, source=name if source.is_file() else f"{name}/compare.json")
        _output.emit(page, html, force)
    if model_card is not None:
        _write_card(model_card, doc, source, model_name)


def _write_card(card: Path, doc: dict, source: Path, model_name: str | None) -> None:
    from fairfix import errors
    from fairfix.report.io import write_atomic
    from fairfix.report.model_card import model_name_of, update_card

    old: str | None = None
    if card.exists():
        try:
            old = card.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.DataError(f"--model-card {card}: cannot read it as UTF-8 text ({exc})") from exc
    default = source.resolve().name if source.is_dir() else (card.resolve().parent.name or "model")
    name = model_name or model_name_of(old, default)
    text, rewritten = update_card(old, doc, model_name=name, where=f"--model-card {card}")
    write_atomic(card, text.encode("utf-8"), force=True)
    if rewritten:
        _output.warn(f"{card}: its metadata had a model-index of its own; fairfix's results were added to it and "
                     "the YAML metadata was written again (keys kept, comments and formatting not)")
    _output.note(f"{'updated' if old is not None else 'wrote'} {card}")
