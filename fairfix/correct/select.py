"""The no-loss guard: (budget, strength, tau, gate) chosen on pooled held-out evidence (DESIGN.md 1.5).

:func:`sweep` turns the adapter's held-out predictions (out-of-fold, or a plain split's)
into one row per setting with its accuracy, worst-group accuracy and paired accuracy change;
:func:`choose` keeps the settings that hold both halves of the promise -- accuracy not down
with ``guard_se`` standard errors to spare, and a worst-group gain whose paired bootstrap
lower bound, in a band that holds for every candidate at once, is above zero -- and takes the
best; :func:`why_off` says why none was kept.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fairfix.correct.config import CorrectConfig
from fairfix.correct.plan import DETECTOR_CHANCE, HINGE_CLOSED, accuracy_change, guard_metrics

EPS = 1e-12


def sweep(adapted: dict[str, np.ndarray], budgets: list[int], config: CorrectConfig, *, base_pred: np.ndarray,
          y: np.ndarray, g: np.ndarray, risk: np.ndarray, gates: list[tuple[str, float | None]], n_classes: int,
          positive: int | None, guard_groups: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """One row per (plan, budget, strength, gate) on the evidence rows.

    ``adapted[plan] (budgets, strengths, N)``: the class each row gets with the adapter on, from
    an adapter that did not train on it; ``base_pred (N,)`` the base's classes; ``g`` group codes.
    """
    rows: list[dict[str, Any]] = []
    for plan, preds in adapted.items():
        for i, steps in enumerate(budgets):
            for j, strength in enumerate(config.strengths):
                for gate, tau in gates:
                    flag = np.ones(len(y), bool) if gate == "all" else risk > tau
                    pred = np.where(flag, preds[i, j], base_pred)
                    m = guard_metrics(pred, y, g, n_classes, positive)
                    gain, se = accuracy_change(pred, base_pred, y)
                    r: dict[str, Any] = {"groups": plan, "steps": steps, "strength": strength, "gate": gate, "tau": tau,
                         "activation_rate": float(flag.mean()), **m, "accuracy_gain": gain, "accuracy_gain_se": se}
                    if guard_groups:
                        r["attribute_worst_group_accuracy"] = {
                            name: guard_metrics(pred, y, codes, n_classes, positive)["worst_group_accuracy"]
                            for name, codes in guard_groups.items()}
                    rows.append(r)
    return rows


def simultaneous_bounds(right: np.ndarray, base_right: np.ndarray, y: np.ndarray, g: np.ndarray, n_classes: int,
                        *, level_se: float, resamples: int, seed: int) -> tuple[np.ndarray, int]:
    """Lower bounds of the worst-group accuracy gain of several candidates, valid for all of them at once.

    ``right (K, N)``: whether each candidate gets each row right; ``base_right (N,)`` the base's.
    The rows are resampled within each (group, class) cell (the same resample for every
    candidate and the base, so their pairing and their correlation are kept); for every
    resample, each candidate's gain is min over cells of its accuracy minus min over cells of
    the base's.  The bound of candidate k is its gain minus the Phi(level_se) quantile of the
    largest overshoot ``max_k (resampled gain_k - gain_k)``: a max-statistic band, so choosing
    the best of many candidates does not lend the winner its luck (the winner's curse: on
    labels that are pure noise, the best of 440 settings gained +5 to +10 WGA points out of
    fold against per-setting bounds).  Returns the bounds and the rows in the base's worst cell.
    """
    known = g >= 0
    cell = g * n_classes + y
    cells = [np.flatnonzero(known & (cell == c)) for c in np.unique(cell[known])]
    cells = [ids for ids in cells if len(ids)]
    if not cells or len(right) == 0:
        return np.full(len(right), np.nan), 0
    rng = np.random.default_rng(seed)
    r = right.astype(np.float64)
    base_acc = np.array([base_right[ids].mean() for ids in cells])
    acc = np.stack([r[:, ids].mean(1) for ids in cells], 1)  # (K, cells)
    gain = acc.min(1) - base_acc.min()
    boot_acc = np.empty((resamples, len(right), len(cells)))
    boot_base = np.empty((resamples, len(cells)))
    for j, ids in enumerate(cells):
        w = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=resamples) / len(ids)  # (B, n_c)
        boot_acc[:, :, j] = w @ r[:, ids].T
        boot_base[:, j] = w @ base_right[ids].astype(np.float64)
    boot_gain = boot_acc.min(2) - boot_base.min(1, keepdims=True)  # (B, K)
    overshoot = (boot_gain - gain).max(1)  # (B,)
    q = float(np.quantile(overshoot, 0.5 * math.erfc(-level_se / math.sqrt(2))))  # Phi(level_se)
    return gain - q, int(len(cells[int(np.argmin(base_acc))]))


def choose(rows: list[dict[str, Any]], base: dict[str, float], config: CorrectConfig, *,
           adapted: dict[str, np.ndarray], budgets: list[int], base_pred: np.ndarray, y: np.ndarray, g: np.ndarray,
           risk: np.ndarray, n_classes: int, base_others: dict[str, float] | None = None) -> dict[str, Any] | None:
    """Mark each row's ``passes_guard`` and return the chosen one (None: the adapter ships off).

    A row passes when (1) its paired accuracy change minus ``guard_se`` standard errors is at
    least ``-max_accuracy_drop``, (2) no other attribute's worst cell drops (several attributes),
    and (3) its worst-group gain is larger than its own noise: its lower bound in the
    simultaneous band over every candidate that raised worst-group accuracy
    (:func:`simultaneous_bounds`) is above zero.  Of those, the highest worst-group accuracy
    wins (then accuracy, then the lower activation rate, then the smaller budget).
    """
    floor = base["accuracy"] - config.max_accuracy_drop - EPS
    base_others = base_others or {}
    raised = []
    for r in rows:
        r["accuracy_ok"] = bool(r["accuracy"] >= floor and r["accuracy_gain"] - config.guard_se
                                * r["accuracy_gain_se"] >= -config.max_accuracy_drop - EPS)
        r["others_ok"] = all(not (base_others[name] > r["attribute_worst_group_accuracy"][name] + EPS)
                             for name in base_others)
        r["wga_gain_lower"] = None
        r["passes_guard"] = False
        if r["worst_group_accuracy"] > base["worst_group_accuracy"] + EPS:
            raised.append(r)
    if raised:
        right = np.stack([_pred(r, adapted, budgets, config, base_pred, risk) == y for r in raised])
        lower, worst_n = simultaneous_bounds(right, base_pred == y, y, g, n_classes, level_se=config.guard_wga_se,
                                             resamples=config.guard_bootstrap, seed=config.seed)
        for r, low in zip(raised, lower, strict=True):
            r["wga_gain_lower"], r["worst_cell_rows"] = float(low), worst_n
            r["passes_guard"] = bool(r["accuracy_ok"] and r["others_ok"] and low > EPS)
    passing = [r for r in rows if r["passes_guard"]]
    return max(passing, key=lambda r: (r["worst_group_accuracy"], r["accuracy"], -r["activation_rate"], -r["steps"]),
               default=None)


def _pred(r: dict[str, Any], adapted: dict[str, np.ndarray], budgets: list[int], config: CorrectConfig,
          base_pred: np.ndarray, risk: np.ndarray) -> np.ndarray:
    """The classes a sweep row's setting gives the evidence rows."""
    preds = adapted[r["groups"]][budgets.index(r["steps"]), config.strengths.index(r["strength"])]
    flag = np.ones(len(base_pred), bool) if r["gate"] == "all" else risk > r["tau"]
    return np.where(flag, preds, base_pred)


def why_off(rows: list[dict[str, Any]], base: dict[str, float], *, hinge_start: float, detector: Any,
            plan: dict[str, Any], config: CorrectConfig, evidence: dict[str, Any],
            base_others: dict[str, float] | None = None) -> list[str]:
    """Why the guard shipped the adapter off, most telling first."""
    reasons = []
    if config.objective != "task" and hinge_start < HINGE_CLOSED:
        reasons.append(f"hinge closed: {hinge_start:.1%} of the anchors are inside the margin "
                       f"{config.margin:g}, so the contrastive loss had nothing to correct")
    rep = getattr(detector, "report", None) or {}
    tpr, fpr = rep.get("tpr"), rep.get("fpr")
    if plan["groups"] != "all" and tpr is not None and fpr is not None and tpr - fpr < DETECTOR_CHANCE:
        reasons.append(f"detector at chance: TPR {tpr:.2f}, FPR {fpr:.2f} on its held-out rows, so the gate "
                       "cannot find the rows to correct")
    noisy = [r for r in rows if r.get("wga_gain_lower") is not None and r["accuracy_ok"] and r["others_ok"]]
    if noisy:
        best = max(noisy, key=lambda r: r["worst_group_accuracy"])
        reasons.append(
            f"too little evidence: the best setting raised worst-group accuracy by "
            f"{best['worst_group_accuracy'] - base['worst_group_accuracy']:+.3f} on the guard's {evidence['rows']} "
            f"rows ({best['worst_cell_rows']} in the worst cell), but its lower bound over the "
            f"{evidence['candidates']} settings tried ({best['wga_gain_lower']:+.3f}) is not above zero")
    blocked = [r for r in rows if r["accuracy_ok"] and not r["others_ok"]
               and r["worst_group_accuracy"] > base["worst_group_accuracy"] + EPS]
    if blocked and not noisy:
        others = base_others or {}
        names = sorted({name for r in blocked for name, v in r["attribute_worst_group_accuracy"].items()
                        if v + EPS < others.get(name, -1.0)})
        reasons.insert(0, f"every setting that raised this attribute's worst cell lowered the worst cell of "
                          f"{', '.join(map(repr, names))} on the guard's rows")
    reasons.append("nothing passed the guard: no (budget, strength, gate) raised worst-group accuracy beyond its "
                   f"noise with an accuracy change - {config.guard_se:g} standard errors >= "
                   f"-{config.max_accuracy_drop:g}")
    return reasons
