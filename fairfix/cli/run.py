"""``fairfix run``: a YAML recipe end to end, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairfix.cli import _options, _output
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
    junit: _options.JunitOpt = None,
    mlflow: _options.MlflowOpt = False,
    quiet: _options.QuietOpt = False,
) -> None:
    """Run train -> audit -> detect -> correct -> audit -> compare; exit 1 when a recipe gate trips."""
    from fairfix import tracking
    from fairfix.recipes import load_recipe, run_recipe

    rec = load_recipe(recipe)
    if check:
        _output.note(f"{recipe}: valid recipe {rec.name!r}")
        return
    if out is not None:  # like every command's --out: its folder must exist and be writable (issue 20)
        from fairfix.report.io import check_folder

        check_folder(out)
    out = out or Path("runs") / rec.name
    _options.check_junit(junit, force, [recipe], {})
    log_to_mlflow = tracking.enabled(mlflow)
    if log_to_mlflow:
        tracking.check_available()
    with _output.StageProgress(quiet=quiet) as progress:
        result = run_recipe(rec, out, until=until, force=force, progress=progress, log=_output.note)
    if "compare" not in result:
        _output.note(f"stopped after {until}; rerun without --until to finish (finished steps are skipped)")
        if junit is not None or log_to_mlflow:
            _output.warn("--junit and --mlflow report a finished run: nothing written or logged before compare")
        return
    doc = result["compare"]
    _output.emit_compare(doc, fmt, None, False)
    _correction_warnings(out / "bundle" / "compare.json")
    if junit is not None:
        import json

        from fairfix.report.junit import audit_suite, compare_suite

        after = json.loads((out / "audit_after.json").read_text())
        _options.write_junit(junit, [audit_suite(after, "fairfix run audit_after"),
                                     compare_suite(doc, "fairfix run compare")], force)
    if log_to_mlflow:
        with tracking.start("run") as mlrun:
            mlrun.params({"recipe": rec.name, "recipe_file": str(recipe)})
            tracking.log_compare(mlrun, doc)
            mlrun.metrics(tracking.gate_metrics(result["audit_gates"]))
            for name in ("audit_before.json", "audit_after.json"):
                mlrun.file(out / name)
            tracking.log_correction(mlrun, tracking.record_from_bundle(out / "bundle"), out / "bundle")
            uri = tracking.log_bundle_model(mlrun, out / "bundle", rec.resolve(rec.section("data")["train"]))
        _output.note(f"logged to MLflow run {mlrun.run_id}; the bundle as the MLflow model {uri}")
    tripped = [g for g in [*result["audit_gates"], *doc["gates"]] if g["tripped"]]
    for g in tripped:
        _output.error(f"gate tripped: {g['expr']} (value {g['value']:.4g})")
    for g in [*result["audit_gates"], *doc["gates"]]:  # as `audit` and `compare` say it, not only in --junit
        if not g["tripped"] and g.get("insufficient_evidence"):
            _output.warn(f"gate passed without sufficient evidence: {g['expr']}: {'; '.join(g.get('reasons') or [])}")
    _output.note(f"artifacts and reports in {out}")
    if tripped:
        raise typer.Exit(EXIT_GATE)


def _correction_warnings(path: Path) -> None:
    """What `fairfix correct` says on stderr about its bundle: an adapter the guard turned off, a closed hinge."""
    import json

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    warning = (doc.get("correction") or {}).get("warning")
    if warning:
        _output.warn(warning)
    if doc.get("adapter_enabled") is False:
        reasons = (doc.get("guard") or {}).get("reasons") or ["nothing passed the guard"]
        _output.warn(f"the bundle ships with the adapter disabled (outputs equal the base model's): {reasons[0]} "
                     "(recipe keys correct.max_accuracy_drop, correct.guard_se)")
    for a in doc.get("attributes") or []:
        if not a.get("adapter_enabled"):
            reasons = (a.get("guard") or {}).get("reasons") or ["nothing passed the guard"]
            _output.warn(f"{a.get('group')}: the adapter is disabled (its rows keep the outputs of the model "
                         f"corrected before it): {reasons[0]}")
