"""``fairfix correct``: FairNet's contrastive conditional LoRA with the no-loss guard."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from fairfix.cli import _model, _options, _output
from fairfix.cli._errors import handle_errors
from fairfix.report.render import Format


@handle_errors
def correct(
    data: Annotated[str, typer.Argument(help="Training table (CSV, Parquet, JSON Lines, -, adult:train).")],
    model: Annotated[str, typer.Option("--model", help="Base model directory.")],
    label: Annotated[str, typer.Option("--label", help="Label column.")],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to create.")],
    group: Annotated[list[str] | None, typer.Option(
        "--group", help="Sensitive column; repeat it to correct several attributes in turn (one detector and "
                        "adapter each). Without it: mode none, no group label is read (the guard judges "
                        "pseudo-cells).")] = None,
    detector: Annotated[Path | None, typer.Option(
        "--detector", help="Detector directory from `fairfix detect` (default: fit one)."
    )] = None,
    minority: Annotated[list[str] | None, typer.Option(
        "--minority",
        help="Disadvantaged group value (repeatable; COL=VALUE with several --group; default: worst cell's group).",
    )] = None,
    mode: Annotated[list[str] | None, typer.Option(
        "--mode",
        help="Detector label mode when fitting one: auto, full, partial, none (one per --group, or one for all).",
    )] = None,
    rank: Annotated[int, typer.Option("--rank", help="LoRA rank.")] = 8,
    alpha: Annotated[float, typer.Option("--alpha", help="LoRA alpha.")] = 16.0,
    dropout: Annotated[float, typer.Option("--dropout", help="LoRA dropout.")] = 0.0,
    targets: Annotated[str | None, typer.Option(
        "--targets", help="Comma-separated linear layers to adapt (default: those after the tap)."
    )] = None,
    margin: Annotated[float, typer.Option(
        "--margin", help="Triplet loss margin (distances on L2-normalised representations lie in [0, 2])."
    )] = 0.5,
    distance: Annotated[str, typer.Option("--distance", help="euclidean or cosine.")] = "euclidean",
    raw_distance: Annotated[bool, typer.Option(
        "--raw-distance", help="Distances on the raw representations instead of L2-normalised ones."
    )] = False,
    groups: Annotated[str, typer.Option(
        "--groups",
        help="auto: correct every group that holds an under-served (group, label) cell; minority: the minority alone.",
    )] = "auto",
    objective: Annotated[str, typer.Option(
        "--objective", help="both (triplet + cell-balanced task loss on the frozen head), triplet, or task."
    )] = "both",
    ce_weight: Annotated[float, typer.Option(
        "--ce-weight", help="Weight of the task (cross-entropy) term beside the triplet (--objective both)."
    )] = 1.0,
    balance: Annotated[str, typer.Option(
        "--balance", help="Every (group, label) cell alike per step: sample (balanced batches) or weight (loss "
                          "weights)."
    )] = "sample",
    train_on: Annotated[str, typer.Option(
        "--train-on", help="Rows the adapter trains on: flagged (by the detector) or minority."
    )] = "flagged",
    steps: Annotated[int, typer.Option(
        "--steps", help="The adapter's budget in optimizer steps, whatever the table's size."
    )] = 400,
    eval_every: Annotated[int, typer.Option(
        "--eval-every", help="The guard judges the adapter after every this many steps (each a candidate budget)."
    )] = 50,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", help="Budget in passes over the corrected rows instead of --steps (turned into steps)."
    )] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per step.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate of the adapter.")] = 3e-3,
    tau: Annotated[str, typer.Option(
        "--tau", help="auto (swept on validation) or a risk threshold in [0, 1]."
    )] = "auto",
    max_accuracy_drop: Annotated[float, typer.Option(
        "--max-accuracy-drop", help="Guard: accuracy may fall at most this much below the base's."
    )] = 0.0,
    guard_wga_se: Annotated[float, typer.Option(
        "--guard-wga-se", help="Guard: the worst-group gain's lower bound, over every setting tried at once, at "
        "this many standard normal units (1: 84%), must be above zero."
    )] = 1.0,
    guard_se: Annotated[float, typer.Option(
        "--guard-se",
        help="Guard margin: accuracy change minus this many standard errors must be >= -max-accuracy-drop (0: plain "
        "floor).",
    )] = 1.0,
    folds: Annotated[int, typer.Option(
        "--folds", help="Cross-fitted folds for the guard: every row judged by adapters that did not train on it."
    )] = 5,
    val_fraction: Annotated[float | None, typer.Option(
        "--val-fraction", help="A plain split instead of cross-fitting: this share of DATA chooses the setting."
    )] = None,
    eval_data: Annotated[str | None, typer.Option(
        "--eval", help="Table for the before/after audits (default: the validation split)."
    )] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of splits and training.")] = 0,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run from its last completed fold."
    )] = False,
    input_format: Annotated[str | None, typer.Option("--input-format", help="csv, parquet or jsonl.")] = None,
    fmt: Annotated[Format | None, typer.Option("--format", help="Output format of the comparison.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the comparison to FILE atomically."
    )] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out / --output if they exist.")] = False,
    factory: _model.FactoryOpt = None,
    mlflow: _options.MlflowOpt = False,
    quiet: _options.QuietOpt = False,
) -> None:
    """Train a FairNet adapter and write a bundle; prints fairfix.compare/1 (before vs after)."""
    from fairfix import errors, tracking
    from fairfix.correct.bundle import save_correction
    from fairfix.correct.fairnet import CorrectConfig
    from fairfix.correct.job import check_job, correct_job, parse_tau

    # --out / --output may be no input: a bundle written over its own base (or detector) loses it (issue 20)
    _output.check_outputs(out, output, force, inputs=[data, model, detector, eval_data])
    _model.refuse_bundle(model, "--model")
    log_to_mlflow = tracking.enabled(mlflow)
    if log_to_mlflow:
        tracking.check_available()
    columns, modes, minorities = check_job(group, list(mode or ["auto"]), minority, detector=detector, resume=resume)
    config = CorrectConfig(rank=rank, alpha=alpha, dropout=dropout, targets=_model.split_columns(targets),
                           margin=margin, distance=distance, normalize=not raw_distance, groups=groups,
                           objective=objective, ce_weight=ce_weight, balance=balance, train_on=train_on,
                           steps=steps, eval_every=eval_every, epochs=epochs, batch_size=batch_size, lr=lr,
                           tau=parse_tau(tau), max_accuracy_drop=max_accuracy_drop, guard_se=guard_se,
                           guard_wga_se=guard_wga_se, folds=folds, val_fraction=val_fraction, seed=seed)
    base = _model.load(model, factory, None, None)
    if len(columns) > 1:
        _correct_many(data, base, label=label, groups=columns, minority=minorities, modes=modes,
                      config=config, eval_data=eval_data, input_format=input_format, out=out, fmt=fmt,
                      output=output, force=force, max_accuracy_drop=max_accuracy_drop, guard_se=guard_se,
                      quiet=quiet, log_to_mlflow=log_to_mlflow, model_path=model)
        return
    checkpoint = out.parent / f".{out.name}.checkpoint"
    if resume and not checkpoint.is_dir():
        raise errors.UsageError(f"--resume: no checkpoint of an interrupted run at {checkpoint}")
    if not resume and checkpoint.is_dir():
        _output.note(f"found the checkpoint of an interrupted run at {checkpoint}; this run starts over and "
                     "replaces it (pass --resume to continue it instead)")
    with _resume_hint(checkpoint), _output.StageProgress(quiet=quiet) as progress:
        corrected, result = correct_job(data, base, label=label, groups=columns, minority=minorities, modes=modes,
                                        detector=detector, config=config, eval_data=eval_data,
                                        input_format=input_format, progress=progress, checkpoint=checkpoint,
                                        resume=resume)
    save_correction(out, corrected, result, label=label, groups=columns, config=config, force=force)
    import shutil

    shutil.rmtree(checkpoint, ignore_errors=True)
    doc = result["compare"]
    corr = doc.get("correction") or {}
    for line in [corr.get("warning"), *(doc.get("warnings") or [])]:
        if line:
            _output.warn(line)
    if doc.get("guard_read"):
        _output.note(doc["guard_read"])
    if not corrected.enabled:
        reasons = doc["guard"].get("reasons") or ["nothing passed the guard"]
        _output.warn(f"the bundle ships with the adapter disabled (outputs equal the base model's): {reasons[0]} "
                     f"(the guard wants the held-out accuracy change >= -{max_accuracy_drop:g} with "
                     f"{guard_se:g} standard error(s) to spare, and a worst-group gain above its noise: "
                     "--max-accuracy-drop, --guard-se)")
    else:
        _output.note(_choice(doc["chosen"], doc["base_validation"], "base", doc.get("evidence")))
    _output.note(f"wrote bundle {out}")
    _output.emit_compare(doc, fmt, output, force)
    if log_to_mlflow:
        with tracking.start("correct") as run:
            run.params({"label": label, "group": group, "model": model, "data": data})
            tracking.log_compare(run, doc)
            tracking.log_correction(run, result["record"], out)
            uri = tracking.log_bundle_model(run, out, data)
        _output.note(f"logged to MLflow run {run.run_id}; the bundle as the MLflow model {uri}")


@contextmanager
def _resume_hint(checkpoint: Path) -> Iterator[None]:
    """On Ctrl-C: say where the completed folds are and how to continue (then exit 130 as ever)."""
    try:
        yield
    except KeyboardInterrupt:
        if checkpoint.is_dir():
            _output.note(f"completed folds are kept in {checkpoint}: rerun with --resume to continue")
        raise


def _choice(ch: dict[str, Any], base: dict[str, Any], word: str, evidence: dict[str, Any] | None = None) -> str:
    """The guard's chosen setting and its held-out figures beside the base's (``word``: how to call them)."""
    where = "every row" if ch.get("gate") == "all" else f"rows with risk > {ch['tau']:.2f}"
    ev = evidence or {}
    on = (f"out-of-fold on {ev['rows']} rows ({ev['folds']} folds)" if ev.get("kind") == "cross-fit"
          else f"on {ev.get('rows', '?')} validation rows")
    bound = ch.get("wga_gain_lower")
    return (f"chose {ch['steps']} steps, strength {ch['strength']:g}, adapter on for {where}: {on}, accuracy "
            f"{ch['accuracy']:.4f} ({word} {base['accuracy']:.4f}), worst-group {ch['worst_group_accuracy']:.4f} "
            f"({word} {base['worst_group_accuracy']:.4f}"
            + (f"; gain's lower bound {bound:+.4f}" if bound is not None else "") + ")")


def _correct_many(data: str, base: Any, *, label: str, groups: list[str], minority: dict[str, list[str]],
                  modes: list[str], config: Any, eval_data: str | None, input_format: str | None,
                  out: Path, fmt: Format | None, output: Path | None, force: bool, max_accuracy_drop: float,
                  guard_se: float, quiet: bool, log_to_mlflow: bool, model_path: str) -> None:
    """Several ``--group``: progressive correction, one bundle with a named adapter per attribute."""
    from fairfix.correct.bundle import save_correction
    from fairfix.correct.job import correct_job

    with _output.StageProgress(quiet=quiet) as progress:
        corrected, result = correct_job(data, base, label=label, groups=groups, minority=minority, modes=modes,
                                        config=config, eval_data=eval_data, input_format=input_format,
                                        progress=progress)
    save_correction(out, corrected, result, label=label, groups=groups, config=config, force=force)
    doc = result["compare"]
    for a in doc["attributes"]:
        if a["adapter_enabled"]:
            _output.note(f"{a['group']}: " + _choice(a["chosen"], a["base_validation"], "before", a.get("evidence")))
        else:
            reasons = a["guard"].get("reasons") or ["nothing passed the guard"]
            _output.warn(f"{a['group']}: the adapter is disabled (its rows keep the outputs of the model corrected "
                         f"before it): {reasons[0]} (--max-accuracy-drop {max_accuracy_drop:g}, "
                         f"--guard-se {guard_se:g})")
    _output.note(f"wrote bundle {out}")
    _output.emit_compare(doc, fmt, output, force)
    if log_to_mlflow:
        from fairfix import tracking

        with tracking.start("correct") as run:
            run.params({"label": label, "group": groups, "model": model_path, "data": data})
            tracking.log_compare(run, doc)
            for group_col, record in zip(groups, result["records"], strict=True):
                tracking.log_correction(run, record, None, prefix=f"{group_col}/")
            tracking.log_attributes(run, doc)
            run.directory(out, "bundle")
            uri = tracking.log_bundle_model(run, out, data)
        _output.note(f"logged to MLflow run {run.run_id}; the bundle as the MLflow model {uri}")
