"""``--fail-on`` gates as a JUnit XML report, for CI servers (GitLab, Jenkins, GitHub test reporters).

One ``<testcase>`` per gate, named by its expression; the measured value (and its
interval, when the audit drew bootstrap resamples) is in the message.  A tripped
gate is a ``<failure>``; a gate that passed with insufficient evidence is
``<skipped type="insufficient_evidence">``: it did not fail the job, but nothing
was proven either, and CI servers show skipped tests apart.  The document follows
the Jenkins ``junit-10.xsd`` schema that GitLab and most CI servers read.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fairfix import __version__

#: Words for the operators in messages (``trips when < 0.8``).
_OP_WORDS = {">": ">", ">=": ">=", "<": "<", "<=": "<="}


@dataclass
class GateSuite:
    """One JUnit ``<testsuite>``: the gates of one report.

    Attributes
    ----------
    name
        The suite's name (``fairfix audit``, ``fairfix compare``).
    gates
        The ``gates`` entries of a ``fairfix.audit/1`` or ``fairfix.compare/1`` document.
    intervals
        ``{metric name as the gate names it: [low, high]}``; a gate whose metric has one
        shows it in its message.
    level
        The interval level (0.95), for the message.
    properties
        ``<property>`` entries of the suite (source, rows, schema ...).
    """

    name: str
    gates: Sequence[Mapping[str, Any]]
    intervals: Mapping[str, Sequence[float | None]] = field(default_factory=dict)
    level: float | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "undefined"
    return f"{x:.4g}"


def gate_message(gate: Mapping[str, Any], interval: Sequence[float | None] | None = None,
                 level: float | None = None) -> str:
    """``worst_group_accuracy = 0.5432 (95% interval [0.5, 0.58]); trips when < 0.8``."""
    msg = f"{gate['metric']} = {_num(gate.get('value'))}"
    if interval is not None and len(interval) == 2 and None not in interval:
        lvl = f"{level:.0%} " if level is not None else ""
        msg += f" ({lvl}interval [{_num(interval[0])}, {_num(interval[1])}])"
    msg += f"; trips when {_OP_WORDS.get(gate['op'], gate['op'])} {gate['threshold']:g}"
    return msg


def junit_xml(suites: Sequence[GateSuite]) -> str:
    """The JUnit XML document (UTF-8, with its declaration) for ``suites``."""
    root = ET.Element("testsuites", name="fairfix")
    total = failures = 0
    for s in suites:
        tripped = [g for g in s.gates if g.get("tripped")]
        skipped = [g for g in s.gates if not g.get("tripped") and g.get("insufficient_evidence")]
        suite = ET.SubElement(root, "testsuite", name=s.name, tests=str(len(s.gates)),
                              failures=str(len(tripped)), errors="0", skipped=str(len(skipped)), time="0")
        props = ET.SubElement(suite, "properties")
        for k, v in {"fairfix_version": __version__, **s.properties}.items():
            ET.SubElement(props, "property", name=str(k), value="" if v is None else str(v))
        classname = "fairfix.gates." + "_".join(s.name.split()[1:] or ["gates"])
        for g in s.gates:
            case = ET.SubElement(suite, "testcase", name=str(g["expr"]), classname=classname, time="0")
            msg = gate_message(g, s.intervals.get(g["metric"]), s.level)
            reasons = list(g.get("reasons") or [])
            if g.get("tripped"):
                el = ET.SubElement(case, "failure", type="gate_tripped", message=f"gate tripped: {msg}")
                el.text = msg
            elif g.get("insufficient_evidence"):
                el = ET.SubElement(case, "skipped", type="insufficient_evidence",
                                   message=f"passed without sufficient evidence: {msg}; {'; '.join(reasons)}")
                el.text = "\n".join(reasons)
            else:
                ET.SubElement(case, "system-out").text = f"passed: {msg}"
        total += len(s.gates)
        failures += len(tripped)
    root.set("tests", str(total))
    root.set("failures", str(failures))
    root.set("errors", "0")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def audit_suite(doc: Mapping[str, Any], name: str = "fairfix audit") -> GateSuite:
    """The suite of a ``fairfix.audit/1`` document: its gates, with the summary intervals."""
    intervals: dict[str, Sequence[float | None]] = dict(doc.get("summary_ci") or {})
    base = doc.get("baseline") or {}
    for k, v in (base.get("summary_ci") or {}).items():
        intervals[f"before.{k}"] = v
    for k, v in (doc.get("summary_ci") or {}).items():
        intervals[f"after.{k}"] = v
    settings = doc.get("settings") or {}
    props = {"schema": doc.get("schema"), "source": settings.get("source"), "rows": doc.get("n"),
             "group_columns": ", ".join(doc.get("group_columns") or [])}
    if base:
        props["baseline"] = base.get("source")
    return GateSuite(name, list(doc.get("gates") or []), intervals, settings.get("ci"), props)


def compare_suite(doc: Mapping[str, Any], name: str = "fairfix compare") -> GateSuite:
    """The suite of a ``fairfix.compare/1`` document: ``before.``/``after.`` gates show their interval."""
    intervals: dict[str, Sequence[float | None]] = {}
    level = None
    for side in ("before", "after"):
        audit = doc.get(side) or {}
        level = level or (audit.get("settings") or {}).get("ci")
        for k, v in (audit.get("summary_ci") or {}).items():
            intervals[f"{side}.{k}"] = v
    props = {"schema": doc.get("schema"), "before": (doc["before"].get("settings") or {}).get("source"),
             "after": (doc["after"].get("settings") or {}).get("source")}
    return GateSuite(name, list(doc.get("gates") or []), intervals, level, props)
