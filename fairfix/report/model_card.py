"""A fairness section in a Hugging Face model card (``fairfix report SOURCE --model-card README.md``).

The card's Markdown gains a section between two HTML comments,
``<!-- fairfix:fairness:begin -->`` and ``<!-- fairfix:fairness:end -->``: the
per-group table with intervals, the summary, the gates and, for a bundle or a
comparison, the correction's before/after and the detector's TPR/FPR.  Its YAML
metadata gains ``model-index`` results for accuracy and worst-group accuracy,
between the YAML comments ``# fairfix:model-index:begin`` / ``# fairfix:model-index:end``.

Updating a card replaces only what lies between the markers: every byte outside
them is kept.  The one exception is a card whose metadata already holds a
``model-index`` of its own (outside fairfix's markers): then fairfix's results are
added to (or replaced in) that model's ``results`` and the metadata block is
written again by PyYAML (keys and values kept, formatting and comments not);
:func:`update_card` says so in its second return value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fairfix import __version__, errors
from fairfix.report.render import SUMMARY_LABELS, fmt_num, md_code, md_text

BEGIN = "<!-- fairfix:fairness:begin -->"
END = "<!-- fairfix:fairness:end -->"
YAML_BEGIN = "# fairfix:model-index:begin (written by fairfix report --model-card; replaced on every update)"
YAML_BEGIN_PREFIX = "# fairfix:model-index:begin"
YAML_END = "# fairfix:model-index:end"
#: ``task.name`` of fairfix's model-index results (how an update finds its own results).
TASK_NAME = "Classification (fairfix audit)"
GROUP_METRICS = (("accuracy", "accuracy"), ("tpr", "TPR"), ("fpr", "FPR"), ("selection_rate", "selection rate"))
_FRONT = re.compile(r"\A---[ \t]*\r?\n(.*?)(^---[ \t]*\r?\n|^---[ \t]*\Z)", re.DOTALL | re.MULTILINE)


def _num(x: Any) -> str:
    return fmt_num(x) if x is not None and not (isinstance(x, float) and math.isnan(x)) else "-"


def _interval(ci: Any) -> str:
    if not ci or len(ci) != 2 or None in ci:
        return ""
    return f" [{fmt_num(ci[0])}, {fmt_num(ci[1])}]"


def _cell(s: Any) -> str:
    return md_text(s)  # HTML-escaped as the HTML report is: no <script>, no second fairfix marker


def _group_name(group: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items())


def _audit_of(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The audit the card's figures describe: the document itself, or a comparison's ``after``."""
    return doc["after"] if doc.get("schema") == "fairfix.compare/1" else doc


def _audit_tables(audit: Mapping[str, Any], level: str = "###") -> list[str]:
    settings = audit.get("settings") or {}
    boot = settings.get("bootstrap") or 0
    ci = settings.get("ci") or 0.95
    binary = audit.get("task", "binary") == "binary"
    lines = [f"{level} Per group", ""]
    if boot:
        lines += [f"Values with {ci:.0%} percentile-bootstrap intervals ({boot} resamples from the confusion "
                  "counts); groups under the minimum size are marked *small*.", ""]
    else:
        # said as it is: correct's before/after audits are point figures, nobody passed --bootstrap 0
        lines += ["No intervals: this audit has no bootstrap resamples (`fairfix audit --bootstrap N` gives "
                  "them; the before/after audits of `fairfix correct` are point figures).", ""]
    metrics = GROUP_METRICS if binary else (("accuracy", "accuracy"),)
    lines += ["| group | n | " + " | ".join(label for _, label in metrics) + " |",
              "|---|---|" + "---|" * len(metrics)]
    for g in audit.get("groups") or []:
        gci = g.get("ci") or {}
        small = " (small)" if g.get("small") else ""
        cells = [f"{_num(g.get(k))}{_interval(gci.get(k))}" for k, _ in metrics]
        lines.append(f"| {_cell(_group_name(g['group']))} | {g.get('n')}{small} | " + " | ".join(cells) + " |")
    summary, sci = audit.get("summary") or {}, audit.get("summary_ci") or {}
    lines += ["", f"{level} Summary", "", "| metric | value | interval |", "|---|---|---|"]
    for k, label in SUMMARY_LABELS.items():
        if k in summary:
            lines.append(f"| {label} | {_num(summary.get(k))} | {_interval(sci.get(k)).strip() or '-'} |")
    worst = summary.get("worst_group")
    if worst:
        acc = summary.get("worst_group_accuracy")
        lines += ["", f"Worst (group, label) cell: {_cell(_group_name(worst['group']))}, label "
                      f"{md_code(worst['label'])}" + (f", accuracy {_num(acc)}." if acc is not None else ".")]
    return lines


def _gate_lines(gates: Any, level: str = "###") -> list[str]:
    if not gates:
        return []
    lines = ["", f"{level} Gates", "", "| gate | value | result |", "|---|---|---|"]
    for g in gates:
        word = ("TRIPPED" if g.get("tripped") else
                "passed (insufficient evidence)" if g.get("insufficient_evidence") else "passed")
        # a gate is METRIC OP NUMBER (parsed, so no markup); only a '|' could break the table
        lines.append(f"| `{str(g['expr']).replace('|', '')}` | {_num(g.get('value'))} | {word} |")
    return lines


def fairness_section(doc: Mapping[str, Any]) -> str:
    """The Markdown between the markers (without them), for an audit or a comparison."""
    audit = _audit_of(doc)
    settings = audit.get("settings") or {}
    cols = ", ".join(md_code(c) for c in audit.get("group_columns") or [])
    lines = ["## Fairness audit", "",
             f"Audited with [fairfix](https://pypi.org/project/fairfix/) {__version__} on "
             f"{md_code(settings.get('source') or doc.get('evaluated_on') or 'the evaluation data')} "
             f"({audit.get('n')} rows), groups by {cols}; label {md_code(audit.get('label'))}"
             + (f", positive label {md_code(audit.get('positive_label'))}." if audit.get("positive_label") is not None
                else "."), ""]
    if doc.get("schema") == "fairfix.compare/1":
        lines += ["The figures below are the corrected model's (FairNet bundle); the base model's are in the "
                  "before/after tables.", ""]
    lines += _audit_tables(audit)
    lines += _gate_lines(audit.get("gates"))
    if doc.get("schema") == "fairfix.compare/1":
        lines += ["", *_compare_lines(doc)]
    return "\n".join(lines) + "\n"


def _signed(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.3f}"


def _compare_lines(doc: Mapping[str, Any]) -> list[str]:
    lines = ["### Correction: before and after", "",
             f"Evaluated on {_cell(doc.get('evaluated_on') or 'the evaluation data')}; adapter "
             f"{'on' if doc.get('adapter_enabled', True) else 'off (the no-loss guard turned it down)'}.", "",
             "| metric | before | after | change |", "|---|---|---|---|"]
    for k, label in SUMMARY_LABELS.items():
        b, a = doc["before"]["summary"].get(k), doc["after"]["summary"].get(k)
        if k in doc["before"]["summary"]:
            lines.append(f"| {label} | {_num(b)} | {_num(a)} | {_signed((doc.get('delta') or {}).get(k))} |")
    lines += ["", "| group | n | accuracy before | accuracy after | change |", "|---|---|---|---|---|"]
    for g in doc.get("groups") or []:
        acc = g.get("accuracy") or {}
        lines.append(f"| {_cell(_group_name(g['group']))} | {g.get('n')} | {_num(acc.get('before'))} | "
                     f"{_num(acc.get('after'))} | {_signed(acc.get('delta'))} |")
    det = doc.get("detector")
    if det:
        from fairfix.report.audit import minority_note

        by = ", ".join(f"{_cell(k)}: {_num(v)}" for k, v in (det.get("activation_rate_by_group") or {}).items())
        if doc.get("gate") == "all":
            lines += ["", "### Bias detector", "",
                      "Gate: every row. The guard chose the adapter for all rows, so the detector's risk score "
                      "does not decide which rows are corrected.", "",
                      "| gate | activation rate | by group |", "|---|---|---|",
                      f"| every row | {_num(det.get('activation_rate'))} | {by or '-'} |"]
        else:
            lines += ["", "### Bias detector", "",
                      "The adapter is switched on for rows whose risk score exceeds tau; the correction's guarantee "
                      "holds under moderate detector errors, so its TPR and FPR are stated.", "",
                      "| tau | TPR | FPR | activation rate | by group |", "|---|---|---|---|---|",
                      f"| {_num(doc.get('tau'))} | {_num(det.get('tpr'))} | {_num(det.get('fpr'))} | "
                      f"{_num(det.get('activation_rate'))} | {by or '-'} |"]
        note = minority_note(doc.get("detector_report"))
        if note:
            lines += ["", _cell(note[0].upper() + note[1:]) + "."]
    for line in doc.get("warnings") or []:
        lines += ["", f"Note: {_cell(line)}."]
    lines += _gate_lines([g for g in doc.get("gates") or []])
    return lines


def model_index_results(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``model-index`` results: accuracy and worst-group accuracy of the audited (or corrected) model."""
    audit = _audit_of(doc)
    summary = audit.get("summary") or {}
    source = (audit.get("settings") or {}).get("source") or doc.get("evaluated_on") or "evaluation data"
    source = Path(str(source)).name or str(source)  # a file's name, not the auditing machine's path
    metrics = []
    for key, name in (("accuracy", "Accuracy"), ("worst_group_accuracy", "Worst-group accuracy")):
        v = summary.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            groups = ", ".join(audit.get("group_columns") or [])
            metrics.append({"type": key, "value": round(float(v), 6),
                            "name": name if key == "accuracy" else f"{name} ({groups})"})
    return [{"task": {"type": "tabular-classification", "name": TASK_NAME},
             "dataset": {"name": str(source), "type": str(source)},
             "metrics": metrics}]


def _yaml_block(doc: Mapping[str, Any], model_name: str) -> str:
    import yaml

    body = yaml.safe_dump({"model-index": [{"name": model_name, "results": model_index_results(doc)}]},
                          sort_keys=False, allow_unicode=True)
    return f"{YAML_BEGIN}\n{body}{YAML_END}\n"


def _replace_between(text: str, begin: str, end: str, inner: str, where: str, *, keep_markers: bool,
                     nl: str = "\n") -> str | None:
    """``text`` with the part from ``begin`` to ``end`` replaced; None when neither marker is there.

    ``keep_markers``: the marker comments stay and ``inner`` goes between them;
    otherwise ``inner`` (which brings its own markers) replaces both marker lines too.
    """
    starts = [m.start() for m in re.finditer(re.escape(begin), text)]
    ends = [m.start() for m in re.finditer(re.escape(end), text)]
    if not starts and not ends:
        return None
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise errors.DataError(f"{where}: expected one {begin!r} before one {end!r} "
                               f"(found {len(starts)} and {len(ends)}); fix the markers or remove both")
    if keep_markers:
        return text[:starts[0]] + BEGIN + nl + inner + text[ends[0]:]
    stop = ends[0] + len(end)
    stop += text[stop:].find("\n") + 1 if "\n" in text[stop:] else len(text) - stop
    return text[:starts[0]] + inner + text[stop:]


def update_card(text: str | None, doc: Mapping[str, Any], *, model_name: str, where: str = "model card"
                ) -> tuple[str, bool]:
    """The card ``text`` (None: a new card) with fairfix's section and model-index results.

    Returns the new text and whether the metadata block was written again (a card
    with a ``model-index`` of its own); otherwise everything outside the markers is
    byte-identical.

    Raises
    ------
    fairfix.errors.DataError
        Unbalanced markers, or metadata that is not a YAML mapping.
    """
    section = fairness_section(doc)
    if text is None:
        return f"---\n{_yaml_block(doc, model_name)}---\n\n# {model_name}\n\n{BEGIN}\n{section}{END}\n", False
    nl = "\r\n" if "\r\n" in text else "\n"  # what fairfix inserts follows the card's line endings
    section = section.replace("\n", nl)
    m = _FRONT.match(text)
    front, closing, body = (m.group(1), m.group(2), text[m.end():]) if m else (None, "---" + nl, text)
    opening = text[:m.start(1)] if m else ""

    new_body = _replace_between(body, BEGIN, END, section, where, keep_markers=True, nl=nl)
    if new_body is None:
        sep = "" if body.endswith(nl + nl) or not body else (nl if body.endswith(nl) else nl + nl)
        new_body = f"{body}{sep}{BEGIN}{nl}{section}{END}{nl}"

    block = _yaml_block(doc, model_name).replace("\n", nl)
    rewritten = False
    if front is None:
        new_front = block
        opening = "---" + nl
    else:
        replaced = _replace_between(front, YAML_BEGIN_PREFIX, YAML_END, block, f"{where} (metadata)",
                                    keep_markers=False)
        if replaced is not None:
            new_front = replaced
        else:
            meta = _load_meta(front, where)
            if "model-index" in meta:
                new_front, rewritten = _merge_model_index(meta, doc, model_name), True
            else:
                new_front = front + ("" if not front or front.endswith("\n") else nl) + block
    return f"{opening}{new_front}{closing}{new_body}", rewritten


def _load_meta(front: str, where: str) -> dict[str, Any]:
    import yaml

    try:
        meta = yaml.safe_load(front) or {}
    except yaml.YAMLError as exc:
        raise errors.DataError(f"{where}: its YAML metadata does not parse ({' '.join(str(exc).split())})") from exc
    if not isinstance(meta, dict):
        raise errors.DataError(f"{where}: its YAML metadata is not a mapping")
    return meta


def _merge_model_index(meta: dict[str, Any], doc: Mapping[str, Any], model_name: str) -> str:
    """Metadata with fairfix's results in the card's own model-index (previous ones replaced)."""
    import yaml

    index = meta.get("model-index")
    if not isinstance(index, list) or not index or not isinstance(index[0], dict):
        index = [{"name": model_name, "results": []}]
    entry = index[0]
    kept = [r for r in entry.get("results") or []
            if not (isinstance(r, dict) and (r.get("task") or {}).get("name") == TASK_NAME)]
    entry["results"] = kept + model_index_results(doc)
    meta["model-index"] = index
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)


def model_name_of(text: str | None, default: str) -> str:
    """The card's ``model_name`` or first ``model-index`` name, else ``default``."""
    if text is None:
        return default
    m = _FRONT.match(text)
    if not m:
        return default
    try:
        meta = _load_meta(m.group(1), "model card")
    except errors.DataError:
        return default
    index = meta.get("model-index")
    if isinstance(index, list) and index and isinstance(index[0], dict) and index[0].get("name"):
        return str(index[0]["name"])
    return str(meta.get("model_name") or default)
