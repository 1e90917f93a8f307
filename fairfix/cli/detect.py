"""``fairfix detect``: fit the bias detector on a model's intermediate representation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairfix.cli import _model, _options, _output
from fairfix.cli._errors import handle_errors
from fairfix.report.render import Format


@handle_errors
def detect(
    data: Annotated[str, typer.Argument(
        help="Table with the model's inputs (CSV, Parquet, JSON Lines, -, adult:train)."
    )],
    model: Annotated[str, typer.Option("--model", help="Base model directory (or state dict with --factory).")],
    out: Annotated[Path, typer.Option("--out", help="Detector directory to create.")],
    group: Annotated[str | None, typer.Option("--group", help="Sensitive column (omit for mode none).")] = None,
    minority: Annotated[list[str] | None, typer.Option(
        "--minority",
        help="Disadvantaged group value (repeatable); default: the group with the worst cell (needs --label).",
    )] = None,
    label: Annotated[str | None, typer.Option(
        "--label", help="Label column: picks the default minority and feeds the 'errors' signal of mode none."
    )] = None,
    mode: Annotated[str, typer.Option("--mode", help="auto, full, partial or none.")] = "auto",
    layer: Annotated[str | None, typer.Option(
        "--layer", help="Tap layer (default: the model kind's tap layer)."
    )] = None,
    eval_group: Annotated[str | None, typer.Option(
        "--eval-group", help="Mode none: a labeled sensitive column used only to measure TPR/FPR."
    )] = None,
    unsupervised: Annotated[str, typer.Option(
        "--unsupervised", help="Mode none signal: lof, errors or combined."
    )] = "lof",
    contamination: Annotated[float, typer.Option(
        "--contamination", help="Mode none: share of rows pseudo-labeled minority."
    )] = 0.3,
    tau: Annotated[float, typer.Option("--tau", help="Risk threshold the report is measured at.")] = 0.5,
    epochs: Annotated[int, typer.Option("--epochs", help="Detector training epochs.")] = 40,
    hidden: Annotated[int, typer.Option(
        "--hidden", help="Hidden width of the detector MLP (0: a linear detector)."
    )] = 64,
    holdout: Annotated[float, typer.Option(
        "--holdout", help="Share of labeled rows held out to measure TPR/FPR."
    )] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of splits and training.")] = 0,
    factory: _model.FactoryOpt = None,
    features: _model.FeaturesOpt = None,
    text_column: _model.TextColumnOpt = None,
    input_format: Annotated[str | None, typer.Option("--input-format", help="csv, parquet or jsonl.")] = None,
    fmt: Annotated[Format | None, typer.Option("--format", help="table or json.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Also write the report (JSON) to FILE atomically."
    )] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out / --output if they exist.")] = False,
    quiet: _options.QuietOpt = False,
) -> None:
    """Fit a detector of minority-group membership; prints fairfix.detect/1."""
    from fairfix.detect.fit import DetectorConfig, fit_detector

    _output.check_outputs(out, output, force, inputs=[data, model])
    config = DetectorConfig(mode=mode, layer=layer, hidden=hidden, epochs=epochs, holdout=holdout, seed=seed,
                            unsupervised=unsupervised, contamination=contamination, tau=tau)
    loaded = _model.load(model, factory, features, text_column)
    with _output.StageProgress(quiet=quiet) as progress:
        det = fit_detector(data, loaded, group=group, minority=minority, label=label, eval_group=eval_group,
                           config=config, input_format=input_format, progress=progress)
    det.save(out, force=force)
    _output.note(f"minority {det.minority!r} ({det.report['minority_chosen_by']}); wrote {out}")
    if det.report.get("reason"):
        _output.warn(det.report["reason"])
    _output.print_detect(det, fmt or Format.table, output, force)
