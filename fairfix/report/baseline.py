"""Gates against a baseline audit: ``fairfix audit --baseline BEFORE.json --fail-on "delta.KEY<X"``.

The semantics are ``fairfix compare``'s (:func:`fairfix.report.compare.build_compare`):
``delta.KEY`` is this audit's value minus the baseline's, ``before.KEY`` the
baseline's and ``after.KEY`` this audit's, so that a CI job can fail on a
regression against the last release's audit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fairfix import errors
from fairfix.metrics.gates import GateResult, parse_gate

#: Gate prefixes that need a baseline.
PREFIXES = ("delta.", "before.", "after.")
NEEDS_BASELINE = ("--fail-on {expr!r}: a gate on delta./before./after. compares against a baseline; "
                  "pass --baseline BEFORE.json (a fairfix.audit/1 JSON)")


def split_gates(fail_on: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(plain gates, baseline gates)``: the second are those on ``delta.``/``before.``/``after.``."""
    plain: list[str] = []
    base: list[str] = []
    for expr in fail_on:
        (base if expr.strip().startswith(PREFIXES) else plain).append(expr)
    return plain, base


def check_gates(exprs: Sequence[str], baseline: Any) -> None:
    """Parse baseline gates before any data is read; they need ``baseline``.

    Raises
    ------
    fairfix.errors.UsageError
        A gate is malformed or names an unknown metric, or there is no baseline.
    """
    from fairfix.report.compare import gate_metrics

    for expr in exprs:
        parse_gate(expr, gate_metrics())
        if baseline is None:
            raise errors.UsageError(NEEDS_BASELINE.format(expr=expr.strip()))


def load_audit(path: str | Path, option: str = "--baseline") -> dict[str, Any]:
    """Read a ``fairfix.audit/1`` JSON document; anything else is one line naming the file.

    Raises
    ------
    fairfix.errors.DataError
        The file is missing, is not JSON, or is not an audit.
    """
    p = Path(path)
    if not p.is_file():
        raise errors.DataError(f"{option} {p}: no such file")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise errors.DataError(f"{option} {p}: not JSON ({' '.join(str(exc).split())})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != "fairfix.audit/1":
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise errors.DataError(f"{option} {p}: not a fairfix.audit/1 document (schema {got!r})")
    if not isinstance(doc.get("summary"), dict) or not isinstance(doc.get("groups"), list):
        raise errors.DataError(f"{option} {p}: a fairfix.audit/1 document without 'summary' and 'groups'")
    return doc


def check_label(baseline: dict[str, Any], label: str, source: str) -> None:
    """Refuse a baseline audit of another label (DataError naming the file), before any data is read."""
    if baseline.get("label") != label:
        raise errors.DataError(f"--baseline {source}: the audits are of different labels: "
                               f"{baseline.get('label')!r} vs {label!r}; compare two audits of the same label")


def evaluate_against(baseline: dict[str, Any], audit: dict[str, Any], exprs: Sequence[str],
                     source: str) -> tuple[list[GateResult], dict[str, Any]]:
    """Evaluate ``exprs`` on ``audit`` against ``baseline``; return the gates and the JSON ``baseline`` key.

    Raises
    ------
    fairfix.errors.DataError
        The audits group by different columns (the message names the baseline file).
    """
    from fairfix.report.compare import build_compare

    try:
        doc = build_compare(baseline, audit, fail_on=exprs)
    except errors.DataError as exc:
        raise errors.DataError(f"--baseline {source}: {exc}") from exc
    gates = [GateResult(g["expr"], g["metric"], g["op"], g["threshold"], g["value"], g["tripped"],
                        g["insufficient_evidence"], list(g.get("reasons") or [])) for g in doc["gates"]]
    info = {"source": source, "summary": baseline["summary"], "summary_ci": baseline.get("summary_ci") or {},
            "delta": doc["delta"]}
    if doc.get("warnings"):
        info["warnings"] = doc["warnings"]
    return gates, info
