"""``--fail-on`` gates: ``METRIC OP NUMBER`` over a report's summary."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fairfix import errors

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_GATE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


@dataclass(frozen=True)
class Gate:
    """A parsed gate: trips when ``metric OP threshold`` holds."""

    expr: str
    metric: str
    op: str
    threshold: float


@dataclass
class GateResult:
    """The outcome of one gate on one report."""

    expr: str
    metric: str
    op: str
    threshold: float
    value: float | None
    tripped: bool
    insufficient_evidence: bool = False
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``gates`` entries of ``fairfix.audit/1``)."""
        d: dict[str, Any] = {
            "expr": self.expr,
            "metric": self.metric,
            "op": self.op,
            "threshold": self.threshold,
            "value": self.value,
            "tripped": self.tripped,
            "insufficient_evidence": self.insufficient_evidence,
        }
        if self.reasons:
            d["reasons"] = self.reasons
        return d


def parse_gate(expr: str, metrics: Iterable[str]) -> Gate:
    """Parse ``METRIC OP NUMBER``; the metric must be one of ``metrics``.

    Raises
    ------
    fairfix.errors.UsageError
        Bad syntax or an unknown metric (the message lists the known ones).
    """
    known = list(metrics)
    m = _GATE.match(expr)
    if not m:
        raise errors.UsageError(
            f"--fail-on {expr!r}: expected METRIC OP NUMBER with OP one of > >= < <=, "
            "e.g. 'equalized_odds_difference>0.1'"
        )
    metric = m["metric"]
    if metric not in known:
        raise errors.UsageError(
            f"--fail-on {expr!r}: unknown metric {metric!r}; known: {', '.join(known)}"
        )
    threshold = float(m["number"])
    if not math.isfinite(threshold):  # 1e999: JSON cannot hold it
        raise errors.UsageError(f"--fail-on {expr!r}: {m['number']} is not a finite number")
    return Gate(expr.strip(), metric, m["op"], threshold)


def evaluate(
    gate: Gate,
    values: Mapping[str, float | None],
    *,
    intervals: Mapping[str, tuple[float | None, float | None]] | None = None,
    small_groups: Iterable[str] = (),
    depends_on_groups: bool = True,
    n_groups: int | None = None,
) -> GateResult:
    """Evaluate ``gate`` and decide whether a pass is backed by enough evidence.

    A gate that does not trip is marked ``insufficient_evidence`` when the value is
    undefined, when a group it depends on is smaller than ``--min-group-size``
    (``small_groups`` names them), when the metric compares groups and there are
    fewer than two (``n_groups``: a gap over one group is 0 by construction), or when
    the metric's confidence interval reaches across the threshold.
    """
    value = values.get(gate.metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return GateResult(
            gate.expr, gate.metric, gate.op, gate.threshold, None, False, True,
            [f"{gate.metric} is undefined on this data"],
        )
    tripped = OPS[gate.op](value, gate.threshold)
    reasons: list[str] = []
    if not tripped:
        small = list(small_groups) if depends_on_groups else []
        if depends_on_groups and n_groups is not None and n_groups < 2:
            reasons.append(f"{n_groups} group(s) only: {gate.metric} compares groups, so one group is no "
                           "evidence of fairness")
        if small:
            reasons.append("groups below --min-group-size: " + "; ".join(small))
        if intervals and gate.metric in intervals:
            lo, hi = intervals[gate.metric]
            if lo is not None and hi is not None and lo <= gate.threshold <= hi:
                reasons.append(
                    f"the {gate.metric} interval [{lo:.4g}, {hi:.4g}] contains {gate.threshold:g}"
                )
    return GateResult(
        gate.expr, gate.metric, gate.op, gate.threshold, float(value), tripped, bool(reasons), reasons
    )
