"""Render reports as JSON, CSV, Markdown or Rich tables.

One small interface, chosen from an enum (as pip-audit does): every renderer
takes a report and returns text; the table renderer can also draw straight to a
Rich console.  Rich is imported only when a table is drawn.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from enum import StrEnum
from typing import Any

from fairfix.report.audit import AuditReport


class Format(StrEnum):
    """Output formats of every command that prints results."""

    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


EXTENSION_FORMATS = {".json": Format.json, ".csv": Format.csv, ".md": Format.markdown,
                     ".markdown": Format.markdown, ".txt": Format.table}

SUMMARY_LABELS = {
    "accuracy": "accuracy",
    "worst_group_accuracy": "worst-group accuracy",
    "tpr_gap": "TPR gap",
    "fpr_gap": "FPR gap",
    "accuracy_gap": "accuracy gap",
    "equalized_odds_difference": "equalized odds difference",
    "equalized_odds_mean": "equalized odds (mean of gaps)",
    "demographic_parity_difference": "demographic parity difference",
    "demographic_parity_ratio": "demographic parity ratio",
}
# For each per-group column of the table: which direction is "worse" (highlighted).
_WORSE = {"accuracy": min, "tpr": min, "fpr": max, "selection_rate": None}


#: C0 and C1 control characters (ANSI escapes start with ESC, 0x1b), shown as ``\xNN``.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}


def printable(value: Any) -> str:
    """Data text for a terminal: control characters (an ANSI escape, a newline) shown as xNN escapes, never raw."""
    return str(value).translate(_CONTROL)


def rich_text(value: Any, style: str = "") -> Any:
    """Data text as a Rich ``Text``: never parsed as markup (``[red]Amer`` prints as written), controls shown."""
    from rich.text import Text

    return Text(printable(value), style=style)


def md_text(value: Any) -> str:
    """Data text for Markdown: HTML-escaped as the HTML report does, ``|`` escaped, controls shown.

    ``<script>``, ``"><img onerror=...>`` and ``<!-- fairfix:fairness:end -->`` stay text
    (and a model card's markers stay the only ones).
    """
    return html.escape(printable(value), quote=True).replace("|", "\\|")


def md_code(value: Any) -> str:
    """Data text as a Markdown code span, backticks included.

    Text a code span cannot hold safely (``<``, ``>``, ``&``, quotes, a backtick, ``|``)
    is written escaped by :func:`md_text` instead.
    """
    text = printable(value)
    if any(c in text for c in "<>&\"'`|"):
        return md_text(text)
    return f"`{text}`"


def fmt_num(x: Any, digits: int = 3) -> str:
    """A rate for people: 3 decimals, ``-`` for undefined (NaN/None)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def to_json(report: AuditReport) -> str:
    """``fairfix.audit/1`` as indented JSON (null for undefined values)."""
    return report.to_json()


def summary_json(summary: dict[str, Any]) -> str:
    """A flat result (``fairfix train``'s summary) as ``--format json`` prints it."""
    return json.dumps(summary, indent=2, default=str) + "\n"


def _group_columns(report: AuditReport) -> list[str]:
    if report.task == "binary":
        return ["n", "accuracy", "tpr", "fpr", "selection_rate", "prevalence", "fnr", "tnr", "ppv"]
    return ["n", "accuracy"]


def group_rows(report: AuditReport) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the per-group table (the CSV body)."""
    gcols = list(report.counts.group_columns)
    cols = _group_columns(report)
    header = [*gcols, *cols]
    ci_keys = list(report.groups[0].get("ci", {})) if report.groups else []
    for k in ci_keys:
        header += [f"{k}_ci_low", f"{k}_ci_high"]
    per_class = report.task == "multiclass"
    if per_class:
        for c in report.counts.label_classes:
            header += [f"tpr[{c}]", f"selection_rate[{c}]"]
    header.append("small")
    rows = []
    for g in report.groups:
        row = [g["group"][c] for c in gcols] + [g[c] for c in cols]
        for k in ci_keys:
            row += list(g["ci"][k])
        if per_class:
            for pc in g["per_class"]:
                row += [pc["tpr"], pc["selection_rate"]]
        row.append(g["small"])
        rows.append(row)
    return header, rows


def to_csv(report: AuditReport) -> str:
    """One row per group: group values, metrics, interval bounds, ``small``."""
    header, rows = group_rows(report)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if (isinstance(v, float) and math.isnan(v)) else v for v in row])
    return buf.getvalue()


def _ci_text(ci: Any) -> str:
    if not ci or ci[0] is None or (isinstance(ci[0], float) and math.isnan(ci[0])):
        return ""
    return f" [{fmt_num(ci[0])}, {fmt_num(ci[1])}]"


def _summary_rows(report: AuditReport) -> list[tuple[str, str, str]]:
    rows = []
    for key, name in SUMMARY_LABELS.items():
        ci = report.summary_ci.get(key)
        rows.append((name, fmt_num(report.summary[key]), _ci_text(ci).strip()))
    from fairfix.report.audit import worst_cell_text

    cell = worst_cell_text(report.summary)
    if cell:
        rows.insert(2, ("worst cell", cell, ""))
    return rows


def _table_cells(report: AuditReport) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Header, text cells and a 'worst value' flag per cell, shared by Markdown and Rich."""
    gcols = list(report.counts.group_columns)
    metrics = ["accuracy", "tpr", "fpr", "selection_rate"] if report.task == "binary" else ["accuracy"]
    header = [*gcols, "n", *[m.replace("_", " ") if m != "tpr" and m != "fpr" else m.upper() for m in metrics]]
    if report.task == "multiclass":
        header += [f"recall[{c}]" for c in report.counts.label_classes]
    worst: dict[str, float] = {}
    for m in metrics:
        pick = _WORSE.get(m)
        vals = [g[m] for g in report.groups if g[m] is not None and not math.isnan(g[m])]
        if pick and len(set(vals)) > 1:  # no "worst" when every group has the same value
            worst[m] = pick(vals)
    cells, flags = [], []
    for g in report.groups:
        row = [str(g["group"][c]) for c in gcols] + [str(g["n"]) + (" (small)" if g["small"] else "")]
        flag = [False] * len(row)
        for m in metrics:
            row.append(fmt_num(g[m]) + _ci_text(g.get("ci", {}).get(m)))
            flag.append(m in worst and g[m] == worst[m])
        if report.task == "multiclass":
            for pc in g["per_class"]:
                row.append(fmt_num(pc["tpr"]))
                flag.append(False)
        cells.append(row)
        flags.append(flag)
    return header, cells, flags


def _md_escape(s: str) -> str:
    return md_text(s)


def to_markdown(report: AuditReport) -> str:
    """Per-group and summary tables in GitHub-flavoured Markdown (worst values in bold)."""
    header, cells, flags = _table_cells(report)
    lines = [f"### Audit of {md_code(report.label)} by {md_text(', '.join(report.counts.group_columns))} "
             f"({report.n} rows)", ""]
    lines.append("| " + " | ".join(map(_md_escape, header)) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row, flag in zip(cells, flags, strict=True):
        lines.append("| " + " | ".join(
            f"**{_md_escape(c)}**" if f else _md_escape(c) for c, f in zip(row, flag, strict=True)
        ) + " |")
    lines += ["", "| metric | value | interval |", "|---|---|---|"]
    for name, value, ci in _summary_rows(report):
        lines.append(f"| {name} | {_md_escape(value)} | {ci} |")
    if report.gates:
        lines += ["", "| gate | value | result |", "|---|---|---|"]
        for gr in report.gates:
            lines.append(f"| `{gr.expr.replace('|', '')}` | {fmt_num(gr.value)} | {_gate_word(gr)} |")
    return "\n".join(lines) + "\n"


def _gate_word(gr: Any) -> str:
    if gr.tripped:
        return "TRIPPED"
    return "passed (insufficient evidence)" if gr.insufficient_evidence else "passed"


def print_table(report: AuditReport, console: Any) -> None:
    """Draw the per-group and summary tables on a Rich console (worst values in red)."""
    from rich.table import Table

    # Every text from the data (labels, column names, group values, class names) goes in as a Rich
    # Text: never parsed as markup, control characters shown (issue 20).
    header, cells, flags = _table_cells(report)
    pos = (f", positive label {report.positive_label!r}" if report.task == "binary" else ", multiclass")
    t = Table(title=rich_text(f"{report.label} by {' x '.join(report.counts.group_columns)}: "
                              f"{report.n} rows{pos}"), title_justify="left")
    for i, h in enumerate(header):
        if i < len(report.counts.group_columns):  # fold long group names, never cut them
            t.add_column(rich_text(h), justify="left", overflow="fold")
        else:
            t.add_column(rich_text(h), justify="right")
    for row, flag in zip(cells, flags, strict=True):
        t.add_row(*[rich_text(c, "bold red" if f else "") for c, f in zip(row, flag, strict=True)])
    console.print(t)
    s = Table(title="summary", title_justify="left")
    s.add_column("metric")
    s.add_column("value", justify="right", overflow="fold")
    s.add_column("interval", justify="right")
    for name, value, ci in _summary_rows(report):
        style = "bold" if name in ("worst-group accuracy", "equalized odds difference") else ""
        s.add_row(name, rich_text(value, style), ci)
    console.print(s)
    if report.gates:
        gt = Table(title="gates", title_justify="left")
        gt.add_column("gate")
        gt.add_column("value", justify="right")
        gt.add_column("result")
        for gr in report.gates:
            color = "red" if gr.tripped else ("yellow" if gr.insufficient_evidence else "green")
            gt.add_row(rich_text(gr.expr), fmt_num(gr.value), rich_text(_gate_word(gr), color))
        console.print(gt)


def render(report: AuditReport, fmt: Format, *, width: int | None = None, color: bool = False) -> str:
    """The report as text in ``fmt`` (tables drawn without colour unless ``color``)."""
    if fmt is Format.json:
        return to_json(report)
    if fmt is Format.csv:
        return to_csv(report)
    if fmt is Format.markdown:
        return to_markdown(report)
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=width or 120, force_terminal=color, no_color=not color,
                      highlight=False)
    print_table(report, console)
    return buf.getvalue()
