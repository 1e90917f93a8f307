"""The ``fairfix`` command line: one module per command, all thin.

Commands parse options, call the library and render; heavy imports (torch,
pandas, Rich) happen inside the commands that need them, so ``fairfix audit``
starts fast.
"""

from __future__ import annotations

import os

import typer

from fairfix import __version__
from fairfix.cli import _fastparams

_fastparams.install()  # plain option values skip Pydantic (~0.2 s at every start)
_fastparams.single_blas_thread()  # audit: no idle OpenBLAS thread pool (before numpy loads)

app = typer.Typer(
    name="fairfix",
    help="Audit classifiers for group disparities and correct them with FairNet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fairfix {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Audit classifiers for group disparities and correct them with FairNet."""


from fairfix.cli import audit as _audit_cmd  # noqa: E402
from fairfix.cli import compare as _compare_cmd  # noqa: E402
from fairfix.cli import correct as _correct_cmd  # noqa: E402
from fairfix.cli import detect as _detect_cmd  # noqa: E402
from fairfix.cli import predict as _predict_cmd  # noqa: E402
from fairfix.cli import report as _report_cmd  # noqa: E402
from fairfix.cli import run as _run_cmd  # noqa: E402
from fairfix.cli import train as _train_cmd  # noqa: E402

app.command("audit")(_audit_cmd.audit)
app.command("train")(_train_cmd.train)
app.command("predict")(_predict_cmd.predict)
app.command("detect")(_detect_cmd.detect)
app.command("correct")(_correct_cmd.correct)
app.command("compare")(_compare_cmd.compare)
app.command("run")(_run_cmd.run)
app.command("report")(_report_cmd.report)


def main() -> None:
    """Console-script entry point."""
    import warnings

    # Deprecation chatter between transformers and peft is not the user's concern.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\..*)?$")
    if os.environ.get("NO_COLOR"):
        # Typer's Rich help and usage errors keep bold and dim under NO_COLOR: print them plain.
        app.rich_markup_mode = None
    before = _stdout_identity()
    try:
        _fastparams.app_for_argv(app)()  # builds only the command being run
    except SystemExit as exc:
        code = exc.code
        # Rich answers a closed stdout (`fairfix audit ... | head -1`, `--help | head`) by pointing
        # stdout at /dev/null and exiting 1 -- the code of a tripped gate.  A reader that went
        # away is not a failure of ours: exit 0, quietly.
        if code == 1 and before is not None and before != _devnull_identity() == _stdout_identity():
            code = 0
        raise SystemExit(_flush_stdout(code)) from None


def _stdout_identity() -> tuple[int, int] | None:
    try:
        st = os.fstat(1)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _devnull_identity() -> tuple[int, int] | None:
    try:
        st = os.stat(os.devnull)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _flush_stdout(code: object) -> object:
    """Flush stdout before exiting; a closed pipe at this point ends the command quietly (exit 0)."""
    import sys

    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more reaches the closed pipe at exit
        return 0 if code in (None, 0, 1) else code
    return code
