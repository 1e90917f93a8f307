"""Render reports as JSON, CSV, Markdown or Rich tables.

One small interface, chosen from an enum (as pip-audit does): every renderer
takes a report and returns text; the table renderer can also draw straight to a
Rich console.  Rich is imported only when a table is drawn.
"""

from __future__ import annotations

import csv
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


def fmt_num(x: Any, digits: int = 3) -> str:
    """A rate for people: 3 decimals, ``-`` for undefined (NaN/None)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def to_json(report: AuditReport) -> str:
    """``fairfix.audit/1`` as indented JSON (null for undefined values)."""
    return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"


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
    wg = report.summary.get("worst_group")
    if wg:
        from fairfix.report.audit import group_label

        rows.insert(2, ("worst group", f"{group_label(wg['group'])}, label={wg['label']}", ""))
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
    return s.replace("|", "\\|")


def to_markdown(report: AuditReport) -> str:
    """Per-group and summary tables in GitHub-flavoured Markdown (worst values in bold)."""
    header, cells, flags = _table_cells(report)
    lines = [f"### Audit of `{report.label}` by {', '.join(report.counts.group_columns)} "
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
            lines.append(f"| `{gr.expr}` | {fmt_num(gr.value)} | {_gate_word(gr)} |")
    return "\n".join(lines) + "\n"


def _gate_word(gr: Any) -> str:
    if gr.tripped:
        return "TRIPPED"
    return "passed (insufficient evidence)" if gr.insufficient_evidence else "passed"


def print_table(report: AuditReport, console: Any) -> None:
    """Draw the per-group and summary tables on a Rich console (worst values in red)."""
    from rich.table import Table

    header, cells, flags = _table_cells(report)
    pos = (f", positive label {report.positive_label!r}" if report.task == "binary" else ", multiclass")
    t = Table(title=f"{report.label} by {' x '.join(report.counts.group_columns)}: "
                    f"{report.n} rows{pos}", title_justify="left")
    for i, h in enumerate(header):
        if i < len(report.counts.group_columns):  # fold long group names, never cut them
            t.add_column(h, justify="left", overflow="fold")
        else:
            t.add_column(h, justify="right")
    for row, flag in zip(cells, flags, strict=True):
        t.add_row(*[f"[bold red]{c}[/]" if f else c for c, f in zip(row, flag, strict=True)])
    console.print(t)
    s = Table(title="summary", title_justify="left")
    s.add_column("metric")
    s.add_column("value", justify="right")
    s.add_column("interval", justify="right")
    for name, value, ci in _summary_rows(report):
        style = "bold" if name in ("worst-group accuracy", "equalized odds difference") else ""
        s.add_row(name, f"[{style}]{value}[/]" if style else value, ci)
    console.print(s)
    if report.gates:
        gt = Table(title="gates", title_justify="left")
        gt.add_column("gate")
        gt.add_column("value", justify="right")
        gt.add_column("result")
        for gr in report.gates:
            color = "red" if gr.tripped else ("yellow" if gr.insufficient_evidence else "green")
            gt.add_row(gr.expr, fmt_num(gr.value), f"[{color}]{_gate_word(gr)}[/]")
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
