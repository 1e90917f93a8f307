"""``fairfix train``: the ERM baseline (FairNet's stage 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairfix.cli import _model, _options, _output
from fairfix.cli._errors import handle_errors
from fairfix.report.render import Format


@handle_errors
def train(
    data: Annotated[
        str, typer.Argument(help="Training table (CSV, Parquet, JSON Lines, -, adult:train or digits_color:train).")
    ],
    label: Annotated[str, typer.Option("--label", help="Column with the labels.")],
    out: Annotated[Path, typer.Option("--out", help="Model directory to create.")],
    features: _model.FeaturesOpt = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", help="Column to leave out of the features (repeatable)."
    )] = None,
    group: Annotated[list[str] | None, typer.Option(
        "--group", help="Sensitive column: left out of the features unless --features names it."
    )] = None,
    text_column: _model.TextColumnOpt = None,
    factory: Annotated[
        str | None,
        typer.Option("--factory", help="package.module:function that builds the torch module to train "
                     "on the numeric --features (e.g. fairfix.models.vision:small_cnn)."),
    ] = None,
    base_model: Annotated[Path | None, typer.Option(
        "--base-model", help="Local Hugging Face model to fine-tune (with --text-column)."
    )] = None,
    positive: Annotated[str | None, typer.Option(
        "--positive", help="Positive label (default: 1, True, or the larger of two labels)."
    )] = None,
    hidden: Annotated[str, typer.Option("--hidden", help="Hidden layer widths of the tabular MLP.")] = "128,64",
    dropout: Annotated[float, typer.Option("--dropout", help="Dropout of the tabular MLP.")] = 0.1,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", help="Budget in passes over the rows instead of --steps (text models: default 1)."
    )] = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", help="Budget in optimizer steps whatever the table's size (tabular and --factory; default 2000)."
    )] = None,
    eval_every: Annotated[int | None, typer.Option(
        "--eval-every", help="Steps between the evaluations early stopping reads (default 100; with --epochs: "
                             "each pass)."
    )] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Rows per step (tabular default 256, text 16)."
    )] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (tabular 1e-3, text 5e-5).")] = None,
    val_fraction: Annotated[float, typer.Option(
        "--val-fraction", help="Share of rows held out for early stopping."
    )] = 0.1,
    patience: Annotated[int, typer.Option(
        "--patience", help="Evaluations without validation improvement before stopping."
    )] = 4,
    max_length: Annotated[int, typer.Option("--max-length", help="Token limit of text models.")] = 128,
    max_steps: Annotated[int | None, typer.Option(
        "--max-steps", help="Stop text fine-tuning after this many steps."
    )] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed: same seed, same weights (CPU).")] = 0,
    input_format: Annotated[str | None, typer.Option("--input-format", help="csv, parquet or jsonl.")] = None,
    fmt: Annotated[Format | None, typer.Option("--format", help="Summary format: table or json.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    quiet: _options.QuietOpt = False,
) -> None:
    """Train a baseline classifier on a table (tabular MLP, a text model with --text-column, or --factory)."""
    from fairfix.training import train_model

    if (text_column is None) != (base_model is None):
        raise _usage("--text-column and --base-model go together (text models)")
    try:
        widths = [int(h) for h in hidden.split(",") if h.strip()]
    except ValueError:
        raise _usage(f"--hidden {hidden!r}: expected comma-separated integers, e.g. 128,64") from None
    _output.check_outputs(out, None, force, inputs=[data, base_model])
    unit = "epochs" if text_column is not None else "evaluations"
    with _output.EpochProgress("training", quiet=quiet, unit=unit) as progress:
        summary = train_model(
            data, label=label, out=out, features=_model.split_columns(features), exclude=exclude or [],
            groups=group or [], text_column=text_column, factory=factory, base_model=base_model,
            positive=positive, hidden=widths, dropout=dropout, epochs=epochs, batch_size=batch_size, lr=lr,
            val_fraction=val_fraction, patience=patience, max_length=max_length, max_steps=max_steps,
            seed=seed, input_format=input_format, force=force, progress=progress, steps=steps,
            eval_every=eval_every,
        )
    _output.print_summary(summary, fmt or Format.table, title=f"trained {out}")


def _usage(msg: str) -> Exception:
    from fairfix import errors

    return errors.UsageError(msg)
