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
    flags = [(gate, tau, gate_flags(gate, tau, risk)) for gate, tau in gates]  # once per gate, not per setting
    for plan, preds in adapted.items():
        for i, steps in enumerate(budgets):
            for j, strength in enumerate(config.strengths):
                for gate, tau, flag in flags:
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


#: A (group, label) cell with fewer held-out rows than this cannot tell a worst-group gain from noise
#: (its resamples barely vary: one row is right or wrong in every one of them).
MIN_CELL_ROWS = 10


def simultaneous_bounds(right: np.ndarray, base_right: np.ndarray, y: np.ndarray, g: np.ndarray, n_classes: int,
                        *, level_se: float, resamples: int, seed: int) -> dict[str, Any]:
    """Lower bounds of several candidates' worst-group gains, valid for all of them at once.

    ``right (K, N)``: whether each candidate gets each row right; ``base_right (N,)`` the base's.
    The rows are resampled within each (group, class) cell (rows of unknown group within their
    class; the same resample for every candidate and the base, so their pairing and their
    correlation are kept); for every resample, each candidate's worst-group gain is min over
    cells of its accuracy minus min over cells of the base's.  A candidate's bound is its gain
    minus the Phi(level_se) quantile of the largest overshoot ``max_k (resampled gain_k -
    gain_k)``: a max-statistic band, so choosing the best of many candidates does not lend the
    winner its luck.  A labelled cell with fewer than ``MIN_CELL_ROWS`` rows makes every bound
    -inf (too little evidence).

    Returns ``{"wga": (K,), "worst_cell_rows", "smallest_cell_rows"}``.
    """
    strata = np.where(g >= 0, g * n_classes + y, -1 - y)  # unknown group: a stratum per class
    cells = [np.flatnonzero(strata == c) for c in np.unique(strata)]
    labelled = [bool(g[ids[0]] >= 0) for ids in cells]
    k = len(right)
    if not any(labelled) or k == 0:
        return {"wga": np.full(k, np.nan), "worst_cell_rows": 0, "smallest_cell_rows": 0}
    rng = np.random.default_rng(seed)
    r = right.astype(np.float64)
    b = base_right.astype(np.float64)
    size = np.array([len(ids) for ids in cells], np.float64)
    acc = np.stack([r[:, ids].mean(1) for ids in cells], 1)  # (K, cells)
    base_acc = np.array([b[ids].mean() for ids in cells])
    lab = np.array(labelled)
    wga_gain = acc[:, lab].min(1) - base_acc[lab].min()
    boot = np.empty((resamples, k, len(cells)))
    boot_base = np.empty((resamples, len(cells)))
    for j, ids in enumerate(cells):
        w = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=resamples) / len(ids)  # (B, n_c)
        boot[:, :, j] = w @ r[:, ids].T
        boot_base[:, j] = w @ b[ids]
    boot_wga = boot[:, :, lab].min(2) - boot_base[:, lab].min(1, keepdims=True)  # (B, K)
    q = float(np.quantile((boot_wga - wga_gain).max(1), 0.5 * math.erfc(-level_se / math.sqrt(2))))  # Phi(level_se)
    smallest = int(size[lab].min())
    wga_lower = wga_gain - q if smallest >= MIN_CELL_ROWS else np.full(k, -np.inf)
    return {"wga": wga_lower, "worst_cell_rows": int(size[lab][int(np.argmin(base_acc[lab]))]),
            "smallest_cell_rows": smallest}


def choose(rows: list[dict[str, Any]], base: dict[str, float], config: CorrectConfig, *,
           adapted: dict[str, np.ndarray], budgets: list[int], base_pred: np.ndarray, y: np.ndarray, g: np.ndarray,
           risk: np.ndarray, n_classes: int, base_others: dict[str, float] | None = None) -> dict[str, Any] | None:
    """Mark each row's ``passes_guard`` and return the chosen one (None: the adapter ships off).

    A row passes when (1) its paired accuracy change minus ``guard_se`` standard errors is at
    least ``-max_accuracy_drop`` (per setting: a band over every setting would ask each
    accuracy change, which is near zero when nothing is lost, to be provably positive, and
    turned down every correction of coloured digits), (2) no other attribute's worst cell drops
    (several attributes), and (3) its worst-group gain is larger than its own noise: its lower
    bound in the simultaneous band over every candidate that raised worst-group accuracy (at
    ``guard_wga_se``; :func:`simultaneous_bounds`) is above zero.  Of those, the highest worst-group accuracy
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
        right = np.stack([setting_classes(r, adapted, budgets, config, base_pred, risk) == y for r in raised])
        bounds = simultaneous_bounds(right, base_pred == y, y, g, n_classes, level_se=config.guard_wga_se,
                                     resamples=config.guard_bootstrap, seed=config.seed)
        for i, r in enumerate(raised):
            r["wga_gain_lower"], r["worst_cell_rows"] = float(bounds["wga"][i]), bounds["worst_cell_rows"]
            r["passes_guard"] = bool(r["accuracy_ok"] and r["others_ok"] and r["wga_gain_lower"] > EPS)
    passing = [r for r in rows if r["passes_guard"]]
    return max(passing, key=lambda r: (r["worst_group_accuracy"], r["accuracy"], -r["activation_rate"], -r["steps"]),
               default=None)


def gate_flags(gate: str, tau: float | None, risk: np.ndarray) -> np.ndarray:
    """The rows a gate switches the adapter on for: every row (``all``), or those with risk > tau."""
    return np.ones(len(risk), bool) if gate == "all" else risk > tau


def setting_classes(r: dict[str, Any], adapted: dict[str, np.ndarray], budgets: list[int], config: CorrectConfig,
                    base_pred: np.ndarray, risk: np.ndarray) -> np.ndarray:
    """The classes a sweep row's setting gives the evidence rows (the base's where its gate is closed)."""
    preds = adapted[r["groups"]][budgets.index(r["steps"]), config.strengths.index(r["strength"])]
    return np.where(gate_flags(r["gate"], r["tau"], risk), preds, base_pred)


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
    if noisy and evidence.get("smallest_cell_rows", MIN_CELL_ROWS) < MIN_CELL_ROWS:
        reasons.append(f"too little evidence: a (group, label) cell of the guard's rows holds "
                       f"{evidence['smallest_cell_rows']} labelled row(s), fewer than {MIN_CELL_ROWS}, too few to tell "
                       "a worst-group gain from noise; give the guard more labelled rows")
    elif noisy:
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
