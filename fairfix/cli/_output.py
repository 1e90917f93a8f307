"""The one place the CLI prints: results to stdout (or --output), everything else to stderr."""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

from fairfix.report.io import write_atomic
from fairfix.report.render import EXTENSION_FORMATS, Format


def choose_format(fmt: Format | None, output: Path | None) -> Format:
    """--format wins; else the --output extension; else a table."""
    if fmt is not None:
        return fmt
    if output is not None:
        return EXTENSION_FORMATS.get(output.suffix.lower(), Format.table)
    return Format.table


def color_enabled(stream: Any) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set."""
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


@cache
def err_console() -> Any:
    """A Rich console on stderr (imported lazily: Rich is not free to import)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, no_color=not color_enabled(sys.stderr))


def error(message: str) -> None:
    """One line: ``fairfix: error: ...``."""
    sys.stderr.write(f"fairfix: error: {message}\n")


def warn(message: str) -> None:
    """One line: ``fairfix: warning: ...``."""
    sys.stderr.write(f"fairfix: warning: {message}\n")


def note(message: str) -> None:
    """One line of information on stderr."""
    sys.stderr.write(f"fairfix: {message}\n")


def emit(text: str, output: Path | None, force: bool) -> None:
    """Results: to ``output`` atomically, else to stdout."""
    if output is not None:
        write_atomic(output, text, force=force)
        note(f"wrote {output}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


class RowProgress:
    """A Rich progress bar on stderr, shown only when stderr is a terminal.

    Use as a context manager; call the instance as ``progress(done, total)``.
    """

    def __init__(self, description: str, unit: str = "rows"):
        self.description = description
        self.unit = unit
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> RowProgress:
        if sys.stderr.isatty() and not os.environ.get("FAIRFIX_NO_PROGRESS"):
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                       TextColumn, TimeElapsedColumn)

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                MofNCompleteColumn(), TextColumn(self.unit), TimeElapsedColumn(),
                console=err_console(), transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=None)
        return self

    def __call__(self, done: int, total: int | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
