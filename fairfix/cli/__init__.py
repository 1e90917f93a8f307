"""The ``fairfix`` command line: one module per command, all thin.

Commands parse options, call the library and render; heavy imports (torch,
pandas, Rich) happen inside the commands that need them, so ``fairfix audit``
starts fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand

from fairfix import __version__
from fairfix.cli import _fastparams

_fastparams.install()  # plain option values skip Pydantic (~0.2 s at every start)
_fastparams.single_blas_thread()  # audit: no idle OpenBLAS thread pool (before numpy loads)

_SETTINGS: dict[str, Any] = {
    "name": "fairfix",
    "help": "Audit classifiers for group disparities and correct them with FairNet.",
    "no_args_is_help": True,
    "add_completion": False,
    "pretty_exceptions_show_locals": False,
    "context_settings": {"help_option_names": ["-h", "--help"]},
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fairfix {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Audit classifiers for group disparities and correct them with FairNet."""


class _Command(TyperCommand):
    """A Typer command whose usage line names its arguments as Click does: ``[OPTIONS] DATA...``.

    Typer 0.29 writes a required argument as ``{data}``; this uses the argument's metavar (else its
    name in capitals), in brackets when optional, ``...`` when it takes many values.  Only the usage
    line changes (through ``collect_usage_pieces``, the hook Click gives commands for it).
    """

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """The usage line's pieces: ``[OPTIONS]``, then each argument."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            shown = param.get_usage_pieces(ctx)
            if shown and param.param_type_name == "argument":
                name = param.metavar or str(param.name).upper()
                name = name if param.required else f"[{name}]"
                shown = [name + ("..." if param.nargs != 1 else "")]
            pieces.extend(shown)
        return pieces


from fairfix.cli import audit as _audit_cmd  # noqa: E402
from fairfix.cli import compare as _compare_cmd  # noqa: E402
from fairfix.cli import correct as _correct_cmd  # noqa: E402
from fairfix.cli import detect as _detect_cmd  # noqa: E402
from fairfix.cli import export as _export_cmd  # noqa: E402
from fairfix.cli import predict as _predict_cmd  # noqa: E402
from fairfix.cli import report as _report_cmd  # noqa: E402
from fairfix.cli import run as _run_cmd  # noqa: E402
from fairfix.cli import train as _train_cmd  # noqa: E402

_COMMANDS: dict[str, Callable[..., Any]] = {
    "audit": _audit_cmd.audit,
    "train": _train_cmd.train,
    "predict": _predict_cmd.predict,
    "detect": _detect_cmd.detect,
    "correct": _correct_cmd.correct,
    "compare": _compare_cmd.compare,
    "export": _export_cmd.export,
    "run": _run_cmd.run,
    "report": _report_cmd.report,
}


def build_app(only: str | None = None) -> typer.Typer:
    """The ``fairfix`` app; with ``only``, one that holds just that command.

    Typer builds the options of every registered command before it runs one (~40-70 ms for eight);
    :func:`main` builds only the command named on the command line (``fairfix``, ``fairfix --help``,
    ``--version`` and unknown names get every command: listings, suggestions).
    """
    new = typer.Typer(**_SETTINGS)
    new.callback()(_root)
    for name, func in _COMMANDS.items():
        if only is None or name == only:
            new.command(name, cls=_Command)(func)
    return new


app = build_app()


def main() -> None:
    """Console-script entry point."""
    import warnings

    # Deprecation chatter between transformers and peft is not the user's concern.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\..*)?$")
    first = sys.argv[1] if len(sys.argv) > 1 else None
    run_app = build_app(first) if first in _COMMANDS else app  # builds only the command being run
    if os.environ.get("NO_COLOR"):
        # Typer's Rich help and usage errors keep bold and dim under NO_COLOR: print them plain.
        run_app.rich_markup_mode = None
    before = _stdout_identity()
    try:
        run_app()
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
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more reaches the closed pipe at exit
        return 0 if code in (None, 0, 1) else code
    return code
