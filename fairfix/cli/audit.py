"""``fairfix audit``: group metrics of a classifier's predictions."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fairfix.cli import _model, _options, _output
from fairfix.cli._errors import EXIT_GATE, handle_errors
from fairfix.report.render import Format

#: Small groups named one by one on stderr; the rest are counted in one line.
SMALL_GROUP_WARNINGS = 10


class Engine(StrEnum):
    """What computes the counts of ``fairfix audit``."""

    auto = "auto"
    arrow = "arrow"
    duckdb = "duckdb"
    spark = "spark"


@handle_errors
def audit(
    data: Annotated[list[str], typer.Argument(help="CSV, Parquet or JSON Lines files (by extension), directories "
                                              "or quoted globs of them, audited as one table; - reads stdin.")],
    label: Annotated[str, typer.Option("--label", help="Column with the true labels.")],
    group: Annotated[list[str], typer.Option("--group", help="Group column; repeat for intersectional groups.")],
    pred: Annotated[str | None, typer.Option("--pred", help="Column with predicted labels.")] = None,
    score: Annotated[str | None, typer.Option("--score", help="Column with positive-class probabilities.")] = None,
    model: _model.ModelOpt = None,
    factory: _model.FactoryOpt = None,
    features: _model.FeaturesOpt = None,
    text_column: _model.TextColumnOpt = None,
    counts: Annotated[str | None, typer.Option(
        "--counts", help="DATA is a counts table: COL holds each row's number of rows (docs/scale.md)."
    )] = None,
    counts_out: Annotated[Path | None, typer.Option(
        "--counts-out", help="Also write the counts table (.parquet or .csv) to FILE, atomically."
    )] = None,
    engine: Annotated[Engine, typer.Option(
        "--engine",
        help="Who computes the counts: arrow (stream here), duckdb (GROUP BY; the duckdb extra), spark (groupBy on "
        "Spark, and --model scores the rows there; the spark extra), auto.",
    )] = Engine.auto,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Predict positive when score >= T (default 0.5)."
    )] = None,
    positive: Annotated[str | None, typer.Option(
        "--positive", help="Positive label (default: 1, True, or the larger of two labels)."
    )] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for intervals (0: none).")] = 1000,
    ci: Annotated[float, typer.Option("--ci", help="Interval level.")] = 0.95,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
    min_group_size: Annotated[int, typer.Option("--min-group-size", help="Flag groups with fewer rows.")] = 30,
    fail_on: Annotated[list[str] | None, typer.Option(
        "--fail-on", help="Exit 1 when METRIC OP NUMBER holds, e.g. 'equalized_odds_difference>0.1'."
    )] = None,
    dropna: Annotated[bool, typer.Option("--dropna", help="Skip rows with an empty label/prediction/score.")] = False,
    keep_missing_groups: Annotated[bool, typer.Option(
        "--keep-missing-groups", help="Audit missing group values as the group '<missing>'."
    )] = False,
    input_format: Annotated[str | None, typer.Option(
        "--input-format", help="csv, parquet or jsonl (for stdin or odd extensions)."
    )] = None,
    fmt: Annotated[Format | None, typer.Option(
        "--format", help="Output format (default: table, or by --output extension)."
    )] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the result to FILE atomically instead of stdout."
    )] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite --output (and --counts-out, --junit) if it exists.")] = False,
    baseline: Annotated[Path | None, typer.Option(
        "--baseline", help="A fairfix.audit/1 JSON to compare against: gates on delta./before./after. KEY, "
                           "as in `fairfix compare`.")] = None,
    junit: _options.JunitOpt = None,
    mlflow: _options.MlflowOpt = False,
    quiet: _options.QuietOpt = False,
) -> None:
    """Audit predictions for group disparities; exit 1 when a --fail-on gate trips."""
    from fairfix import tracking
    from fairfix._audit import audit as run_audit
    from fairfix.report import baseline as base_gates
    from fairfix.report.io import check_writable
    from fairfix.report.render import print_table, render

    plain_gates, delta_gates = base_gates.split_gates(fail_on or ())
    base_gates.check_gates(delta_gates, baseline)  # fail before reading a large file
    base_doc = base_gates.load_audit(baseline) if baseline is not None else None
    if base_doc is not None:
        base_gates.check_label(base_doc, label, str(baseline))  # before reading any data
    if output is not None:
        check_writable(output, force, inputs=data)
    _options.check_junit(junit, force, [*data, *([baseline] if baseline else [])],
                         {"--output": output, "--counts-out": counts_out})
    log_to_mlflow = tracking.enabled(mlflow)
    if log_to_mlflow:
        tracking.check_available()
    if counts_out is not None:
        from fairfix.report.counts_out import counts_format

        counts_format(counts_out)
        check_writable(counts_out, force, inputs=data)
        if output is not None and output.resolve() == counts_out.resolve():
            from fairfix import errors

            raise errors.UsageError(f"--counts-out {counts_out}: is the --output file too")
    if model is not None and (counts is not None or engine is Engine.duckdb):
        from fairfix import errors

        # Checked before the model is loaded (the library checks the same).
        if counts is not None:
            raise errors.UsageError(errors.COUNTS_WITH_MODEL)
        raise errors.UsageError("--engine duckdb counts columns; with --model the rows go through the model "
                                "(use --engine arrow, or --engine spark to score them on Spark)")
    chosen = _output.choose_format(fmt, output)
    loaded = _model.load(model, factory, features, text_column) if model is not None else None
    with _output.RowProgress("auditing", quiet=quiet) as progress:
        report = run_audit(
            data[0] if len(data) == 1 else data,
            label=label,
            group=group,
            pred=pred,
            score=score,
            model=loaded,
            threshold=threshold,
            positive=positive,
            bootstrap=bootstrap,
            ci=ci,
            seed=seed,
            min_group_size=min_group_size,
            fail_on=plain_gates,
            dropna=dropna,
            keep_missing_groups=keep_missing_groups,
            input_format=input_format,
            counts=counts,
            engine=engine.value,
            progress=progress,
        )
    if loaded is not None:
        _model.warn_filled(loaded, ", ".join(data))
    if base_doc is not None:
        extra_gates, info = base_gates.evaluate_against(base_doc, report.to_dict(), delta_gates, str(baseline))
        report.gates.extend(extra_gates)
        report.extra["baseline"] = info
        for line in info.get("warnings") or []:
            _output.warn(f"--baseline {baseline}: {line}")
    if counts_out is not None:
        from fairfix.report.counts_out import counts_table, write_counts

        write_counts(counts_out, counts_table(report.counts, label=label, prediction=pred or "pred",
                                              count=counts or "n"), force)
        _output.note(f"wrote {counts_out}")
    if report.settings.get("dropped_rows"):
        _output.warn(f"dropped {report.settings['dropped_rows']} row(s) with an empty label, prediction or score")
    if report.positive_label_source and report.positive_label_source.startswith("default"):
        _output.note(f"positive label {report.positive_label!r} ({report.positive_label_source[9:]}; "
                     "--positive to change)")
    from fairfix.report.audit import group_label

    small = report.small_groups
    for g in small[:SMALL_GROUP_WARNINGS]:
        _output.warn(f"group {group_label(g['group'])} has {g['n']} rows (< --min-group-size {min_group_size})")
    if len(small) > SMALL_GROUP_WARNINGS:
        _output.warn(f"... and {len(small) - SMALL_GROUP_WARNINGS} more group(s) under --min-group-size "
                     f"{min_group_size} (each is flagged \"small\" in the JSON)")
    if chosen is Format.table and output is None:
        print_table(report, _output.console())
    else:
        _output.emit(render(report, chosen), output, force)
    if junit is not None or log_to_mlflow:
        doc = report.to_dict()
        if junit is not None:
            from fairfix.report.junit import audit_suite

            _options.write_junit(junit, [audit_suite(doc)], force)
        if log_to_mlflow:
            with tracking.start("audit") as run:
                tracking.log_audit(run, doc)
            _output.note(f"logged to MLflow run {run.run_id}")
    for gr in report.gates:
        if gr.tripped:
            _output.error(f"gate tripped: {gr.expr} (value {gr.value:.4g})")
        elif gr.insufficient_evidence:
            _output.warn(f"gate passed without sufficient evidence: {gr.expr}: {'; '.join(gr.reasons)}")
    if report.tripped:
        raise typer.Exit(EXIT_GATE)
