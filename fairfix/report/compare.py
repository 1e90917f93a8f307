"""``fairfix.compare/1``: two audits side by side, with deltas and gates on them."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fairfix import __version__, errors
from fairfix.metrics.gates import evaluate, parse_gate
from fairfix.metrics.rates import SUMMARY_METRICS
from fairfix.report.render import SUMMARY_LABELS, Format, fmt_num, md_text, rich_text

SCHEMA = "fairfix.compare/1"
GROUP_KEYS = ("accuracy", "tpr", "fpr", "selection_rate")


def gate_metrics() -> list[str]:
    """Keys a compare gate may name: ``delta.KEY``, ``before.KEY``, ``after.KEY``."""
    return [f"{p}.{k}" for p in ("delta", "after", "before") for k in SUMMARY_METRICS]


def _delta(a: Any, b: Any) -> float | None:
    if a is None or b is None:
        return None
    return float(b) - float(a)


def _check_audit(doc: Any, name: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("schema") != "fairfix.audit/1":
        raise errors.DataError(f"{name}: not a fairfix.audit/1 JSON document")
    return doc


def read_audit(path: str | Path) -> dict[str, Any]:
    """A ``fairfix.audit/1`` document from a JSON file (``fairfix compare``'s BEFORE / AFTER).

    Raises
    ------
    fairfix.errors.DataError
        A missing file, a file that is not JSON, or JSON of another schema (naming the file).
    """
    p = Path(path)
    if not p.is_file():
        raise errors.DataError(errors.MISSING_FILE.format(path=p))
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise errors.DataError(f"{p}: not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != "fairfix.audit/1":
        schema = doc.get("schema") if isinstance(doc, dict) else None
        raise errors.DataError(f"{p}: not a fairfix.audit/1 document (schema {schema!r})")
    return doc


def build_compare(before: dict[str, Any], after: dict[str, Any], *, fail_on: Sequence[str] = (),
                  detector: dict[str, Any] | None = None, tau: Any = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The comparison document; gates are evaluated on ``delta.*``/``before.*``/``after.*`` values."""
    _check_audit(before, "BEFORE")
    _check_audit(after, "AFTER")
    if before.get("group_columns") != after.get("group_columns"):
        raise errors.DataError(
            f"the audits group by different columns: {before.get('group_columns')} vs {after.get('group_columns')}"
        )
    if before.get("label") != after.get("label"):
        raise errors.DataError(f"the audits are of different labels: {before.get('label')!r} vs "
                               f"{after.get('label')!r}; compare two audits of the same label")
    warnings = mismatches(before, after)
    gates = [parse_gate(e, gate_metrics()) for e in fail_on]
    delta = {k: _delta(before["summary"].get(k), after["summary"].get(k)) for k in SUMMARY_METRICS}
    after_groups = {json.dumps(g["group"], sort_keys=True): g for g in after["groups"]}
    groups = []
    for g in before["groups"]:
        a = after_groups.get(json.dumps(g["group"], sort_keys=True), {})
        groups.append({"group": g["group"], "n": g["n"],
                       **{k: {"before": g.get(k), "after": a.get(k), "delta": _delta(g.get(k), a.get(k))}
                          for k in GROUP_KEYS if k in g}})
    values = {f"delta.{k}": v for k, v in delta.items()}
    values.update({f"before.{k}": before["summary"].get(k) for k in SUMMARY_METRICS})
    values.update({f"after.{k}": after["summary"].get(k) for k in SUMMARY_METRICS})
    small = [", ".join(f"{k}={v}" for k, v in g["group"].items()) for g in after["groups"] if g.get("small")]
    n_groups = min(len(before["groups"]), len(after["groups"]))
    results = [evaluate(g, values, small_groups=small, n_groups=n_groups).to_dict() for g in gates]
    return {
        "schema": SCHEMA,
        "fairfix_version": __version__,
        "before": before,
        "after": after,
        "delta": delta,
        "groups": groups,
        "detector": detector,
        "tau": tau,
        **(extra or {}),
        **({"warnings": warnings} if warnings else {}),
        "gates": results,
    }


def mismatches(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What makes two audits of the same label and group columns hard to compare, one line each.

    Other rows (row count or source file), another positive label, or other groups (values
    present in one audit only): the deltas then mix a change of model with a change of data.
    """
    out: list[str] = []
    src_b = (before.get("settings") or {}).get("source")
    src_a = (after.get("settings") or {}).get("source")
    if before.get("n") != after.get("n") or (src_b and src_a and src_b != src_a):
        where = f"; sources {src_b} vs {src_a}" if src_b and src_a and src_b != src_a else ""
        out.append(f"the audits evaluated different rows ({before.get('n')} vs {after.get('n')} rows{where}): "
                   "deltas mix the change of model with a change of data")
    if before.get("positive_label") != after.get("positive_label"):
        out.append(f"the audits use different positive labels ({before.get('positive_label')!r} vs "
                   f"{after.get('positive_label')!r}): rates such as TPR are not comparable")
    names_b = {_group_name(g["group"]) for g in before.get("groups") or []}
    names_a = {_group_name(g["group"]) for g in after.get("groups") or []}
    if names_b != names_a:
        only_b, only_a = sorted(names_b - names_a), sorted(names_a - names_b)
        parts = [f"only in BEFORE: {', '.join(map(repr, only_b[:3]))}" if only_b else "",
                 f"only in AFTER: {', '.join(map(repr, only_a[:3]))}" if only_a else ""]
        out.append("the audits have different groups (" + "; ".join(p for p in parts if p) + ")")
    return out


def _rows(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    from fairfix.report.audit import worst_cell_text

    rows = [(SUMMARY_LABELS[k], fmt_num(doc["before"]["summary"].get(k)), fmt_num(doc["after"]["summary"].get(k)),
             _signed(doc["delta"].get(k))) for k in SUMMARY_METRICS]
    cells = [worst_cell_text(doc[p]["summary"]) for p in ("before", "after")]
    if any(cells):  # the worst-group accuracy is a (group, label) cell's: name it
        at = next((i + 1 for i, r in enumerate(rows) if r[0] == SUMMARY_LABELS["worst_group_accuracy"]), len(rows))
        rows.insert(at, ("worst cell", cells[0] or "-", cells[1] or "-", ""))
    return rows


def detector_rows(doc: dict[str, Any]) -> tuple[list[str], list[str]] | None:
    """The detector panel's header and row: TPR/FPR at tau, or "gate: every row" when the adapter is on for all."""
    det = doc.get("detector")
    if not det:
        return None
    by = ", ".join(f"{k}: {fmt_num(v)}" for k, v in (det.get("activation_rate_by_group") or {}).items())
    if doc.get("gate") == "all":  # the detector decides nothing: TPR 1 / FPR 0 would describe no gate
        return ["gate", "activation rate", "by group"], ["every row", fmt_num(det.get("activation_rate")), by]
    return (["TPR", "FPR", "activation rate", "by group"],
            [fmt_num(det.get("tpr")), fmt_num(det.get("fpr")), fmt_num(det.get("activation_rate")), by])


def _signed(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.3f}"


def _group_name(g: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in g.items())


def _attribute_rows(doc: dict[str, Any]) -> list[list[str]]:
    """One row per corrected attribute (progressive correction): before -> after of its own audit."""
    rows = []
    for a in doc.get("attributes") or []:
        b, f, d = a["before"], a["after"], a.get("detector") or {}
        rows.append([str(a["group"]),
                     *[f"{fmt_num(b.get(k))} → {fmt_num(f.get(k))} ({_signed(a['delta'].get(k))})"
                       for k in ("accuracy", "worst_group_accuracy")],
                     f"{fmt_num(d.get('tpr'))} / {fmt_num(d.get('fpr'))}", fmt_num(d.get("activation_rate")),
                     ("on" if a.get("adapter_enabled") else "off") + f" ({a.get('gate') or '-'})"])
    return rows


EVIDENCE_HEADER = ("evidence", "rows", "smallest cell", "accuracy", "WGA", "WGA gain bound")


def _evidence_row(doc: dict[str, Any]) -> list[str] | None:
    """The guard's evidence and its figures: out-of-fold (or validation) base -> chosen setting."""
    ev, base, ch = doc.get("evidence"), doc.get("base_validation") or {}, doc.get("chosen")
    if not isinstance(ev, dict):
        return None
    kind = f"{ev.get('folds')}-fold cross-fit" if ev.get("kind") == "cross-fit" else "validation split"
    after = ch or base

    def pair(key: str) -> str:
        return f"{fmt_num(base.get(key))} → {fmt_num(after.get(key))}"

    return [kind, str(ev.get("rows", "-")), str(ev.get("smallest_cell_rows", "-")), pair("accuracy"),
            pair("worst_group_accuracy"), _signed(ch.get("wga_gain_lower")) if ch else "-"]


def _evidence_title(doc: dict[str, Any]) -> str:
    """The chosen setting, for the evidence table's title."""
    ch = doc.get("chosen")
    if not ch:
        return "the guard's evidence (held-out rows, base → base: the adapter is off)"
    where = "every row" if ch.get("gate") == "all" else f"tau {fmt_num(ch.get('tau'))}"
    return (f"the guard's evidence (held-out rows, base → chosen: {ch.get('steps')} steps, "
            f"strength {fmt_num(ch.get('strength'))}, {where})")


def render_compare(doc: dict[str, Any], fmt: Format, console: Any = None) -> str:
    """The comparison as JSON, CSV (per group), Markdown, or Rich tables (drawn on ``console``)."""
    if fmt is Format.json:
        return json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n"
    if fmt is Format.csv:
        import csv

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["group", "n", *[f"{k}_{p}" for k in GROUP_KEYS for p in ("before", "after", "delta")]])
        for g in doc["groups"]:
            w.writerow([_group_name(g["group"]), g["n"],
                        *["" if g.get(k, {}).get(p) is None else g[k][p] for k in GROUP_KEYS
                          for p in ("before", "after", "delta")]])
        return buf.getvalue()
    if fmt is Format.markdown:
        lines = ["| metric | before | after | delta |", "|---|---|---|---|"]
        lines += [f"| {a} | {md_text(b)} | {md_text(c)} | {d} |" for a, b, c, d in _rows(doc)]
        lines += ["", "| group | n | accuracy | TPR | FPR |", "|---|---|---|---|---|"]
        for g in doc["groups"]:
            cells = [f"{fmt_num(g[k]['before'])} → {fmt_num(g[k]['after'])} ({_signed(g[k]['delta'])})"
                     for k in ("accuracy", "tpr", "fpr") if k in g]
            lines.append(f"| {md_text(_group_name(g['group']))} | {g['n']} | " + " | ".join(cells) + " |")
        if doc.get("attributes"):
            lines += ["", "| attribute | accuracy | worst-group accuracy | detector TPR / FPR | activation | adapter |",
                      "|---|---|---|---|---|---|"]
            lines += ["| " + " | ".join([md_text(row[0]), *row[1:]]) + " |" for row in _attribute_rows(doc)]
        corr = doc.get("correction")
        if corr:
            corrected = md_text(", ".join(map(str, corr.get("corrected_groups") or [])))
            lines += ["", "| groups corrected | gate | anchors | hinge open | adapter |", "|---|---|---|---|---|",
                      f"| {corrected} | {doc.get('gate') or '-'} | "
                      f"{corr.get('anchors', '-')} | {fmt_num(corr.get('hinge_open_share'))} | "
                      f"{'on' if doc.get('adapter_enabled') else 'off'} |"]
        evidence = _evidence_row(doc)
        if evidence:
            lines += ["", _evidence_title(doc), "", "| " + " | ".join(EVIDENCE_HEADER) + " |",
                      "|" + "---|" * len(EVIDENCE_HEADER), "| " + " | ".join(evidence) + " |"]
        return "\n".join(lines) + "\n"
    from rich.table import Table

    t = Table(title="summary: before -> after", title_justify="left")
    for c in ("metric", "before", "after", "delta"):  # the worst cell names a group: fold it, never cut it
        t.add_column(c, justify="left" if c == "metric" else "right", overflow="fold")
    for row in _rows(doc):
        t.add_row(*[rich_text(c) for c in row])  # a worst cell names a group: data, never markup
    console.print(t)
    gt = Table(title="per group", title_justify="left")
    gt.add_column("group", overflow="fold")  # long group names wrap, never cut (as in `audit`)
    gt.add_column("n", justify="right")
    for k in ("accuracy", "TPR", "FPR"):
        gt.add_column(k, justify="right")
    for g in doc["groups"]:
        gt.add_row(rich_text(_group_name(g["group"])), str(g["n"]),
                   *[f"{fmt_num(g[k]['before'])} → {fmt_num(g[k]['after'])} ({_signed(g[k]['delta'])})"
                     for k in ("accuracy", "tpr", "fpr") if k in g])
    console.print(gt)
    if doc.get("attributes"):
        at = Table(title="per attribute (in fit order); the summary above is over their intersection",
                   title_justify="left")
        for c in ("attribute", "accuracy", "worst-group accuracy", "detector TPR / FPR", "activation", "adapter"):
            at.add_column(c, justify="left" if c == "attribute" else "right",
                          overflow="fold" if c == "attribute" else "ellipsis")
        for cells in _attribute_rows(doc):
            at.add_row(rich_text(cells[0]), *cells[1:])
        console.print(at)
    panel = detector_rows(doc)
    if panel:
        from fairfix.report.audit import minority_note

        title = "detector: gate every row" if doc.get("gate") == "all" else f"detector (tau {fmt_num(doc.get('tau'))})"
        note = minority_note(doc.get("detector_report"))
        dt = Table(title=title, title_justify="left", caption=rich_text(note) if note else None,
                   caption_justify="left")
        for c in panel[0]:
            dt.add_column(c, justify="right")
        dt.add_row(*panel[1][:-1], rich_text(panel[1][-1]))
        console.print(dt)
    corr = doc.get("correction")
    if corr:
        ct = Table(title="correction", title_justify="left")
        for c in ("groups corrected", "gate", "anchors", "hinge open", "adapter"):
            ct.add_column(c, justify="right")
        ct.add_row(rich_text(", ".join(map(str, corr.get("corrected_groups") or []))), str(doc.get("gate") or "-"),
                   str(corr.get("anchors", "-")), fmt_num(corr.get("hinge_open_share")),
                   "on" if doc.get("adapter_enabled") else "off")
        console.print(ct)
    evidence = _evidence_row(doc)
    if evidence:
        et = Table(title=_evidence_title(doc), title_justify="left")
        for c in EVIDENCE_HEADER:
            et.add_column(c, justify="right")
        et.add_row(*evidence)
        console.print(et)
    for gr in doc.get("gates", []):
        state = "TRIPPED" if gr["tripped"] else ("passed (insufficient evidence)" if gr["insufficient_evidence"]
                                                 else "passed")
        console.print(rich_text(f"gate {gr['expr']}: {fmt_num(gr['value'])} {state}"))
    return ""
