"""Options shared by several commands: progress, JUnit reports, MLflow tracking."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress on stderr (neither the Rich bar on a terminal nor the per-stage lines "
                          "off one); notes, warnings and errors still show.")]
JunitOpt = Annotated[Path | None, typer.Option(
    "--junit", help="Also write the gates as a JUnit XML report to FILE (one testcase per gate), atomically.")]
MlflowOpt = Annotated[bool, typer.Option(
    "--mlflow", envvar="FAIRFIX_MLFLOW",
    help="Log metrics, gates and reports to MLflow (the tracking URI of MLFLOW_TRACKING_URI; the mlflow extra).")]


def check_junit(path: Path | None, force: bool, inputs: list, others: dict) -> None:
    """Fail before any work when ``--junit`` may not be written or is another output of the command too.

    ``others`` maps option names (``--output``) to their paths (or None).
    """
    if path is None:
        return
    from fairfix import errors
    from fairfix.report.io import check_writable

    check_writable(path, force, inputs=inputs)
    for name, other in others.items():
        if other is not None and Path(other).resolve() == path.resolve():
            raise errors.UsageError(f"--junit {path}: is the {name} file too")


def write_junit(path: Path | None, suites: list, force: bool) -> None:
    """Write ``suites`` (:class:`fairfix.report.junit.GateSuite`) to ``path`` atomically, when given."""
    if path is None:
        return
    from fairfix.cli import _output
    from fairfix.report.io import write_atomic
    from fairfix.report.junit import junit_xml

    write_atomic(path, junit_xml(suites), force=force)
    _output.note(f"wrote {path}")
