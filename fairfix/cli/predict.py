"""``fairfix predict``: score a table with a model, streaming to a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairfix.cli import _model, _options, _output
from fairfix.cli._errors import handle_errors


@handle_errors
def predict(
    data: Annotated[str, typer.Argument(help="Table to score (CSV, Parquet, JSON Lines, -, adult:test).")],
    model: Annotated[str, typer.Option(
        "--model", help="Model directory (fairfix or Hugging Face) or state dict (with --factory)."
    )],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Predictions file (.csv, .parquet, .jsonl), written atomically."
    )],
    id_column: Annotated[str | None, typer.Option(
        "--id", help="Column copied to the output (else a row number)."
    )] = None,
    keep: Annotated[list[str] | None, typer.Option(
        "--keep", help="Input column to carry into the output (repeatable), e.g. the label and group columns "
                       "for `fairfix audit OUTPUT`."
    )] = None,
    keep_all: Annotated[bool, typer.Option("--keep-all", help="Carry every input column into the output.")] = False,
    factory: _model.FactoryOpt = None,
    features: _model.FeaturesOpt = None,
    text_column: _model.TextColumnOpt = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Binary models predict positive when score >= T (default 0.5)."
    )] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Rows per inference batch.")] = None,
    input_format: Annotated[str | None, typer.Option("--input-format", help="csv, parquet or jsonl.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output if it exists.")] = False,
    quiet: _options.QuietOpt = False,
) -> None:
    """Write id/row, kept columns, score (per class for multiclass) and pred for every row."""
    from fairfix.predict import predict as run_predict
    from fairfix.report.io import check_writable

    check_writable(output, force, inputs=[data, model])
    loaded = _model.load(model, factory, features, text_column)
    with _output.RowProgress("predicting", quiet=quiet) as progress:
        result = run_predict(data, loaded, output, id_column=id_column, threshold=threshold, keep=keep or (),
                             keep_all=keep_all, batch_rows=batch_size, input_format=input_format, force=force,
                             progress=progress)
    _model.warn_filled(loaded, data)
    _output.note(f"wrote {result['rows']} rows to {result['output']}")
