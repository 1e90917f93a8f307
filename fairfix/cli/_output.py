"""The one place the CLI prints: results to stdout (or --output), everything else to stderr."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Self

from fairfix.report.io import write_atomic
from fairfix.report.render import EXTENSION_FORMATS, Format, printable, rich_text, summary_json


def check_outputs(out: Path | None, output: Path | None, force: bool, inputs: Sequence[Any] = ()) -> None:
    """Fail before any work when an artifact directory or report file may not be written.

    Without ``force`` nothing is overwritten; with it, ``out`` must be a fairfix
    artifact and ``output`` a regular file, and neither may be (or hold) an input.
    """
    from fairfix.artifacts import check_replaceable
    from fairfix.report.io import check_writable

    if out is not None:
        check_replaceable(out, force, inputs)
    if output is not None:
        check_writable(output, force, inputs)


def choose_format(fmt: Format | None, output: Path | None) -> Format:
    """--format wins; else the --output extension; else a table."""
    if fmt is not None:
        return fmt
    if output is not None:
        return EXTENSION_FORMATS.get(output.suffix.lower(), Format.table)
    return Format.table


def color_enabled(stream: Any) -> bool:
    """Colour on a terminal or with FORCE_COLOR (CI logs), never when NO_COLOR is set."""
    if os.environ.get("NO_COLOR"):
        return False
    return bool(os.environ.get("FORCE_COLOR")) or (hasattr(stream, "isatty") and stream.isatty())


def console(stderr: bool = False) -> Any:
    """A Rich console on stdout or stderr (imported lazily: Rich is not free to import).

    Without colour it writes no style escapes at all: Rich's ``no_color`` drops colours
    but keeps bold and italics, and FORCE_COLOR would bring them back off a terminal.
    """
    from rich.console import Console

    styled = color_enabled(sys.stderr if stderr else sys.stdout)
    if styled:
        return Console(stderr=stderr, highlight=False, no_color=False)
    return Console(stderr=stderr, highlight=False, no_color=True, color_system=None)


@cache
def err_console() -> Any:
    """The Rich console on stderr (progress bars)."""
    return console(stderr=True)


#: Progress objects writing one line per stage (off a terminal): a line is written when its stage ends,
#: so a note written meanwhile would come before the stage it follows; notes flush them first.
_PENDING: list[Any] = []


def _flush_progress() -> None:
    for progress in _PENDING:
        progress._flush()


# Messages quote values from the data (group values, column names): control characters in them
# (a raw ANSI escape, a newline) are shown as \xNN, never sent to the terminal, and a message stays one line.
def error(message: str) -> None:
    """One line: ``fairfix: error: ...``."""
    _flush_progress()
    sys.stderr.write(f"fairfix: error: {printable(message)}\n")


def warn(message: str) -> None:
    """One line: ``fairfix: warning: ...``."""
    _flush_progress()
    sys.stderr.write(f"fairfix: warning: {printable(message)}\n")


def note(message: str) -> None:
    """One line of information on stderr (after the progress line of the stage it follows)."""
    _flush_progress()
    sys.stderr.write(f"fairfix: {printable(message)}\n")


def emit(text: str, output: Path | None, force: bool) -> None:
    """Results: to ``output`` atomically, else to stdout."""
    if output is not None:
        write_atomic(output, text, force=force)
        note(f"wrote {output}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def progress_mode(quiet: bool = False) -> str:
    """How progress is shown on stderr: ``rich`` (a terminal), ``lines`` (a CI log) or ``off``.

    ``--quiet`` or ``FAIRFIX_NO_PROGRESS`` turn it off; on a terminal it is a Rich bar; when
    stderr is not a terminal, one plain line per finished stage (no cursor control codes).
    """
    if quiet or os.environ.get("FAIRFIX_NO_PROGRESS"):
        return "off"
    return "rich" if hasattr(sys.stderr, "isatty") and sys.stderr.isatty() else "lines"


def _metrics_text(metrics: dict[str, float] | None) -> str:
    return "" if not metrics else " " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


class RowProgress:
    """Progress on stderr in one of three modes (:func:`progress_mode`).

    Use as a context manager; call the instance as ``progress(done, total)``.  On a
    terminal a Rich bar; off a terminal one line per stage when it ends
    (``fairfix: auditing: 16281 rows (0.4 s)``); with ``quiet`` nothing.
    """

    def __init__(self, description: str, unit: str = "rows", quiet: bool = False):
        self.description = description
        self.unit = unit
        self.mode = progress_mode(quiet)
        self._progress: Any = None
        self._task: Any = None
        self._line: dict[str, Any] | None = None
        self._t0 = 0.0

    def __enter__(self) -> Self:
        import time

        self._t0 = time.perf_counter()  # a stage's clock starts when the one before it ended
        if self.mode == "rich":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                MofNCompleteColumn(), TextColumn(self.unit), TimeElapsedColumn(),
                console=err_console(), transient=True,
            )
            self._progress.__enter__()
            if self.description:  # a StageProgress adds one task per stage, labelled, when the stage starts
                self._task = self._progress.add_task(self.description, total=None)
        elif self.mode == "lines":
            _PENDING.append(self)
        return self

    def _track(self, stage: str, done: int, total: int | None, metrics: dict[str, float] | None) -> None:
        """Lines mode: remember the stage's latest state; a new stage ends the one before."""
        if self._line is not None and self._line["stage"] != stage:
            self._flush()
        if self._line is None:
            self._line = {"stage": stage}
        self._line.update(done=done, total=total, metrics=metrics)

    def _flush(self) -> None:
        import time

        line, self._line = self._line, None
        if line is None:
            return
        of = f"/{line['total']}" if line.get("total") else ""
        unit = f" {self._unit_of(line['stage'])}" if self._unit_of(line["stage"]) else ""
        now = time.perf_counter()
        note(f"{line['stage']}: {line['done']}{of}{unit}{_metrics_text(line.get('metrics'))} ({now - self._t0:.1f} s)")
        self._t0 = now

    def _unit_of(self, stage: str) -> str:
        return self.unit

    def __call__(self, done: int, total: int | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)
        elif self.mode == "lines":
            self._track(self.description, done, total, None)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self in _PENDING:
            _PENDING.remove(self)
        if self._progress is not None:
            self._progress.__exit__(exc_type, *exc)
        elif self.mode == "lines" and exc_type is None:
            self._flush()


class EpochProgress(RowProgress):
    """Progress over epochs that shows the latest losses."""

    def __init__(self, description: str, quiet: bool = False, unit: str = "epochs"):
        super().__init__(description, unit=unit, quiet=quiet)

    def __call__(self, done: int, total: int | None = None, metrics: dict[str, float] | None = None) -> None:  # type: ignore[override]
        if self._progress is not None:
            desc = self.description + _metrics_text(metrics)
            self._progress.update(self._task, completed=done, total=total, description=desc)
        elif self.mode == "lines":
            self._track(self.description, done, total, metrics)


def print_summary(summary: dict[str, Any], fmt: Any, title: str = "") -> None:
    """A flat result (train, predict) as JSON or a two-column table on stdout."""
    from fairfix.report.render import Format

    if fmt is Format.json:
        sys.stdout.write(summary_json(summary))
        return
    from rich.table import Table

    t = Table(title=title or None, title_justify="left", show_header=False)
    t.add_column("key")
    t.add_column("value")
    for k, v in summary.items():
        if isinstance(v, dict):
            v = ", ".join(v)
        elif isinstance(v, list):
            v = ", ".join(map(str, v))
        t.add_row(rich_text(k), rich_text("" if v is None else v))
    console().print(t)


class StageProgress(RowProgress):
    """Progress per stage: called as ``progress(stage, done, total, metrics)``; off a terminal one line a stage.

    The correction's stages count optimizer steps: ``adapter`` the steps of every cross-fitted
    fold and plan together, ``adapter (shipped)`` the steps of the adapter it ships.
    """

    UNITS = {"adapter": "steps", "adapter (shipped)": "steps"}

    def __init__(self, quiet: bool = False) -> None:
        super().__init__("", unit="", quiet=quiet)
        self._stage: str | None = None

    def _unit_of(self, stage: str) -> str:
        return self.UNITS.get(stage, "")

    def __call__(self, stage: str, done: int, total: int | None = None,  # type: ignore[override]
                 metrics: dict[str, float] | None = None) -> None:
        if self.mode == "lines":
            self._track(stage, done, total, metrics)
            return
        if self._progress is None:
            return
        if stage != self._stage:
            self._stage = stage
            self._task = self._progress.add_task(stage, total=total)
        desc = stage + _metrics_text(metrics)
        self._progress.update(self._task, completed=done, total=total, description=desc)


def _rate(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_detect(detector: Any, fmt: Any, output: Path | None, force: bool) -> None:
    """``fairfix.detect/1`` as JSON, or tables of the operating point and the tau sweep."""
    from fairfix.report.render import Format

    report, text = detector.report, detector.to_json()
    if output is not None:
        write_atomic(output, text, force=force)
    if fmt is Format.json:
        sys.stdout.write(text)
        return
    from rich.table import Table

    from fairfix.report.audit import minority_note

    note = minority_note(report)
    t = Table(title=rich_text(f"detector ({report['mode']} mode, layer {report['layer']}): minority "
                              f"{report['minority']} of {report['group_column']}"), title_justify="left",
              caption=rich_text(note) if note else None, caption_justify="left")
    for col in ("tau", "TPR", "FPR", "precision", "activation rate"):
        t.add_column(col, justify="right")
    t.add_row(_rate(report["tau"]), _rate(report["tpr"]), _rate(report["fpr"]), _rate(report["precision"]),
              _rate(report["activation_rate"]))
    c = console()
    c.print(t)
    if report.get("activation_rate_by_group"):
        g = Table(title="activation rate by group", title_justify="left")
        g.add_column("group")
        g.add_column("activation rate", justify="right")
        for k, v in report["activation_rate_by_group"].items():
            g.add_row(rich_text(k), _rate(v))
        c.print(g)
    if report.get("sweep"):
        s = Table(title="tau sweep (held-out labeled rows)", title_justify="left")
        for col in ("tau", "TPR", "FPR", "precision", "activation rate"):
            s.add_column(col, justify="right")
        for row in report["sweep"]:
            s.add_row(_rate(row["tau"]), _rate(row["tpr"]), _rate(row["fpr"]), _rate(row["precision"]),
                      _rate(row["activation_rate"]))
        c.print(s)


def emit_compare(doc: dict[str, Any], fmt: Any, output: Path | None, force: bool) -> None:
    """A fairfix.compare/1 document in the chosen format, to stdout or --output."""
    from fairfix.report.compare import render_compare
    from fairfix.report.render import Format

    chosen = choose_format(fmt, output)
    if chosen is Format.table and output is None:
        render_compare(doc, chosen, console())
    else:
        emit(render_compare(doc, chosen) if chosen is not Format.table else
             render_compare(doc, Format.markdown), output, force)
