"""The audit result (``fairfix.audit/1``) built from confusion counts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fairfix import __version__
from fairfix.metrics import bootstrap as boot
from fairfix.metrics import rates
from fairfix.metrics.counts import ConfusionCounts
from fairfix.metrics.gates import Gate, GateResult, evaluate

SCHEMA = "fairfix.audit/1"
CI_METRICS_BINARY = ("accuracy", "selection_rate", "tpr", "fpr")


@dataclass
class AuditReport:
    """Everything an audit found; ``to_dict()`` gives the JSON of DESIGN.md section 4.

    Attributes
    ----------
    counts
        The confusion counts behind every number.
    task
        ``"binary"`` or ``"multiclass"``.
    overall, groups, cells, summary
        As in the JSON schema; undefined rates are NaN here and null in JSON.
    summary_ci
        ``{summary key: (low, high)}`` when bootstrap resamples were drawn.
    gates
        One :class:`~fairfix.metrics.gates.GateResult` per ``fail_on`` expression.
    settings
        How the audit was run (threshold, bootstrap, seed, rows dropped, ...).
    extra
        Further top-level JSON keys (``baseline`` of ``fairfix audit --baseline``).
    """

    counts: ConfusionCounts
    label: str | None
    positive_label: Any
    positive_label_source: str | None
    task: str
    overall: dict[str, Any]
    groups: list[dict[str, Any]]
    cells: list[dict[str, Any]]
    summary: dict[str, Any]
    summary_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Rows audited."""
        return self.counts.n

    @property
    def tripped(self) -> list[GateResult]:
        """The gates that tripped (non-empty means exit code 1 on the CLI)."""
        return [g for g in self.gates if g.tripped]

    @property
    def small_groups(self) -> list[dict[str, Any]]:
        """Groups smaller than ``min_group_size``."""
        return [g for g in self.groups if g["small"]]

    def to_json(self) -> str:
        """``fairfix.audit/1`` as indented JSON (null for undefined values): what ``--format json`` prints."""
        import json

        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """The ``fairfix.audit/1`` JSON object (NaN written as null)."""
        return _jsonable(
            {
                "schema": SCHEMA,
                "fairfix_version": __version__,
                "n": self.n,
                "label": self.label,
                "task": self.task,
                "positive_label": self.positive_label,
                "positive_label_source": self.positive_label_source,
                "classes": list(self.counts.label_classes),
                "group_columns": list(self.counts.group_columns),
                "settings": self.settings,
                "overall": self.overall,
                "groups": self.groups,
                "cells": self.cells,
                "summary": self.summary,
                "summary_ci": {k: list(v) for k, v in self.summary_ci.items()},
                **self.extra,
                "gates": [g.to_dict() for g in self.gates],
            }
        )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def _f(x: Any) -> float:
    return float(x)


def _containing(lo: float, hi: float, point: Any) -> tuple[float, float]:
    """The percentile interval ``[lo, hi]`` widened, where it misses it, to hold the point estimate.

    A percentile interval of a max-minus-min statistic (every gap) can miss its own point:
    the resampled maximum gap is biased upward, so ``accuracy gap 0.038 [0.039, 0.282]``.
    An interval that does not contain the figure it qualifies misleads; fairfix reports
    ``[min(lo, point), max(hi, point)]`` (docs/metrics.md, "Intervals").
    """
    if point is None or math.isnan(point) or math.isnan(lo) or math.isnan(hi):
        return lo, hi
    return min(lo, float(point)), max(hi, float(point))


def group_label(group: dict[str, Any]) -> str:
    """``sex=Female, race=Black``: how messages and tables name a group."""
    return ", ".join(f"{k}={v}" for k, v in group.items())


def worst_cell_text(summary: dict[str, Any]) -> str | None:
    """The worst (group, label) cell and its accuracy: ``race=White, label=no 0.077`` (None when there is none).

    The worst-group accuracy is a cell's, not a group's: a group whose accuracy is 0.69 may hold
    it, through one label served badly, so every report names the label beside the group.
    """
    wg = summary.get("worst_group")
    if not isinstance(wg, dict) or not isinstance(wg.get("group"), dict):
        return None
    acc = summary.get("worst_group_accuracy")
    value = "" if acc is None or (isinstance(acc, float) and math.isnan(acc)) else f" {float(acc):.3f}"
    return f"{group_label(wg['group'])}, label={wg.get('label')}{value}"


def minority_note(report: dict[str, Any] | None) -> str | None:
    """When the default minority is the larger group: which cell made it the "minority" (a detector report).

    The default minority is the group that holds the base model's worst (group, label) cell, so it
    can hold most rows (law school data: White, 84% of rows, through its failing students).
    """
    worst = (report or {}).get("worst_cell")
    if not isinstance(worst, dict) or not isinstance(worst.get("group"), dict):
        return None
    share = worst.get("share")
    if share is None or share <= 0.5:
        return None
    acc = worst.get("accuracy")
    cell = worst_cell_text({"worst_group": worst, "worst_group_accuracy": acc})
    return (f"the minority {group_label(worst['group'])} holds {share:.0%} of the rows: it was chosen because it "
            f"holds the base model's worst cell ({cell}); --minority names another group")


def build_report(
    counts: ConfusionCounts,
    *,
    label: str | None,
    positive: Any,
    positive_source: str | None,
    n_bootstrap: int = 0,
    ci: float = 0.95,
    seed: int | None = 0,
    min_group_size: int = 30,
    gates: Sequence[Gate] = (),
    settings: dict[str, Any] | None = None,
) -> AuditReport:
    """Compute every metric of DESIGN.md section 2 from ``counts``.

    ``positive`` is the positive class for a binary task and None for multiclass.
    """
    classes = list(counts.classes)
    label_idx = [classes.index(c) for c in counts.label_classes]
    binary = positive is not None
    targets = [classes.index(positive)] if binary else label_idx
    c = counts.counts
    gdicts = counts.group_dicts()
    n_g = c.sum(axis=(1, 2))

    def metric_rows(arr: np.ndarray) -> list[dict[str, Any]]:
        acc = rates.accuracy(arr)
        rows: list[dict[str, Any]] = []
        if binary:
            r = rates.one_vs_rest(arr, targets[0])
            for i in range(arr.shape[0]):
                row: dict[str, Any] = {"n": int(arr[i].sum())}
                for m in rates.GROUP_METRICS_BINARY:
                    row[m] = _f(acc[i]) if m == "accuracy" else _f(r[m][i])
                rows.append(row)
        else:
            per = {k: rates.one_vs_rest(arr, k) for k in label_idx}
            for i in range(arr.shape[0]):
                rows.append(
                    {
                        "n": int(arr[i].sum()),
                        "accuracy": _f(acc[i]),
                        "per_class": [
                            {"label": classes[k], **{m: _f(per[k][m][i]) for m in rates.PER_CLASS_METRICS}}
                            for k in label_idx
                        ],
                    }
                )
        return rows

    overall = metric_rows(c.sum(axis=0, keepdims=True))[0]
    groups = []
    for gd, row, n in zip(gdicts, metric_rows(c), n_g, strict=True):
        groups.append({"group": gd, **row, "small": bool(n < min_group_size)})

    cell_acc = rates.cell_accuracy(c)
    cell_n = c.sum(axis=-1)
    cells = [
        {"group": gd, "label": classes[k], "n": int(cell_n[g, k]), "accuracy": _f(cell_acc[g, k])}
        for g, gd in enumerate(gdicts)
        for k in label_idx
        if cell_n[g, k] > 0
    ]

    point = rates.summary_arrays(c, targets, label_idx)
    summary: dict[str, Any] = {k: _f(v) for k, v in point.items()}
    wc = rates.worst_cell(c, label_idx)
    summary["worst_group"] = (
        None if wc is None else {"group": gdicts[wc[0]], "label": classes[wc[1]]}
    )
    # Order the keys as in the schema.
    ordered = {k: summary[k] for k in ("accuracy", "worst_group_accuracy", "worst_group")}
    ordered.update({k: summary[k] for k in rates.SUMMARY_METRICS if k not in ordered})
    summary = ordered

    summary_ci: dict[str, tuple[float, float]] = {}
    if n_bootstrap > 0:
        boot.check_memory(n_bootstrap, c.shape[0], c.shape[1])
        rng = np.random.default_rng(seed)
        reps = boot.resample_counts(c, n_bootstrap, rng)  # (B, G, K, K)
        rep_sum = rates.summary_arrays(reps, targets, label_idx)
        for k, v in rep_sum.items():
            lo, hi = boot.percentile_interval(v, ci)
            summary_ci[k] = _containing(_f(lo), _f(hi), summary.get(k))
        rep_acc = rates.accuracy(reps)  # (B, G)
        acc_lo, acc_hi = boot.percentile_interval(rep_acc, ci)
        if binary:
            r = rates.one_vs_rest(reps, targets[0])
            bounds = {m: boot.percentile_interval(r[m], ci) for m in CI_METRICS_BINARY if m != "accuracy"}
        for i, grp in enumerate(groups):
            grp["ci"] = {"accuracy": list(_containing(_f(acc_lo[i]), _f(acc_hi[i]), grp.get("accuracy")))}
            if binary:
                for m, (lo, hi) in bounds.items():
                    grp["ci"][m] = list(_containing(_f(lo[i]), _f(hi[i]), grp.get(m)))

    small = [f"{group_label(g['group'])} (n={g['n']})" for g in groups if g["small"]]
    gate_results = [
        evaluate(
            gate,
            summary,
            intervals=summary_ci,
            small_groups=small,
            depends_on_groups=rates.SUMMARY_USES_GROUPS.get(gate.metric, True),
            n_groups=len(groups),
        )
        for gate in gates
    ]
    return AuditReport(
        counts=counts,
        label=label,
        positive_label=positive,
        positive_label_source=positive_source,
        task="binary" if binary else "multiclass",
        overall=overall,
        groups=groups,
        cells=cells,
        summary=summary,
        summary_ci=summary_ci,
        gates=gate_results,
        settings={"min_group_size": min_group_size, "bootstrap": n_bootstrap, "ci": ci, "seed": seed,
                  **(settings or {})},
    )
