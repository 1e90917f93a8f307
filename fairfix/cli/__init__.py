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
    _fastparams.app_for_argv(app)()  # builds only the command being run
