#!/usr/bin/env python
"""Guard rules for FairNet's no-loss guard: which one holds accuracy on test, at what WGA cost.

The numbers behind ``CorrectConfig.guard_se`` (docs/results.md, "The no-loss guard").

Stage 1 (collect): per (dataset, seed) run correct() exactly as benchmarks/fairnet.py::run_seed
does for the full-label regime, record the per-epoch adapter states (wrapping
fairfix.correct.fairnet._lora_state), then recompute for every (epoch, strength) the adapted
predictions on validation and test, plus the detector risk, base predictions and ERM
probabilities; cache them in bench-data/guard/{dataset}_s{seed}.npz.

Stage 2 (evaluate): guard rules that choose on validation only; report test deltas vs ERM.

    OMP_NUM_THREADS=1 .venv/bin/python -W ignore benchmarks/guard_rules.py collect --datasets adult,compas --seeds 5
    OMP_NUM_THREADS=1 .venv/bin/python -W ignore benchmarks/guard_rules.py evaluate --seeds 5

``collect`` needs the ERM models cached by ``benchmarks/peers.py`` (bench-data/fairnet/erm) and
runs ``correct()`` with ``guard_se=0`` (the plain floor, rule a), whose choice it checks.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))
OUT = REPO / "bench-data" / "guard"
CACHE = OUT


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ stage 1: collect


def collect(key: str, seed: int) -> None:
    import fairnet_protocol as bench  # the FairNet benchmark's protocol (benchmarks/fairnet_protocol.py)
    import torch
    from fairnet_tasks import adult_task, compas_task

    import fairfix.correct.fairnet as fn
    from fairfix.correct.fairnet import CorrectConfig, head_inputs, set_strength
    from fairfix.correct.run import correct
    from fairfix.detect.fit import DetectorConfig

    task = adult_task(False) if key == "adult" else compas_task(False, bench.DATA)
    split = bench.seed_split(task, seed)  # correct()'s validation split, as the benchmark uses it
    dev, test, train_frame, val_frame = split.dev, split.test, split.train, split.val
    distinct = split.groups
    model, _, cached = bench.erm_model(task, train_frame, seed, False)
    assert cached, "ERM model expected in the benchmark cache"

    def codes(frame):
        return split.codes(task, frame)

    y_va, g_va = codes(val_frame)
    y_te, g_te = codes(test)

    # -- record the adapter state after every epoch
    states: list[dict] = []
    orig = fn._lora_state

    def recording(module):
        s = orig(module)
        states.append(s)
        return s

    fn._lora_state = recording
    t0 = time.perf_counter()
    try:
        corrected, res = correct(dev, model, label=task.label, group=task.group,
                                 config=CorrectConfig(seed=seed, val_fraction=task.val_fraction, guard_se=0.0),
                                 detector_config=DetectorConfig(seed=seed), eval_data=test)
    finally:
        fn._lora_state = orig
    fit_s = time.perf_counter() - t0
    rec = res["record"]
    cfg = rec["config"]
    assert len(states) == cfg["epochs"], len(states)

    work = corrected.base  # the LoRA-carrying copy
    det = corrected.detector
    batch = 4096
    in_va, in_te = model.encode(val_frame), model.encode(test)
    _, risk_va, proba_va = head_inputs(model, in_va, det.layer, det.module, batch)
    _, risk_te, proba_te = head_inputs(model, in_te, det.layer, det.module, batch)
    base_va, base_te = proba_va.argmax(1), proba_te.argmax(1)
    strengths = list(cfg["strengths"])
    E, S = len(states), len(strengths)
    ad_va = np.zeros((E, S, len(y_va)), np.int8)
    ad_te = np.zeros((E, S, len(y_te)), np.int8)

    def fwd(inputs, n):
        with torch.no_grad():
            return np.concatenate([work.forward({k: v[s:s + batch] for k, v in inputs.items()}).argmax(1).numpy()
                                   for s in range(0, n, batch)])

    for e, st in enumerate(states):
        work.module.load_state_dict(st, strict=False)
        for j, s in enumerate(strengths):
            set_strength(work.module, s, cfg["alpha"], cfg["rank"])
            ad_va[e, j] = fwd(in_va, len(y_va))
            ad_te[e, j] = fwd(in_te, len(y_te))

    # -- sanity: our validation sweep == the guard's sweep; rule (a) test == after-audit
    taus = np.array(fn.TAUS)
    n_groups = len(distinct)
    i = 0
    for e in range(E):
        for j, s in enumerate(strengths):
            for t in taus:
                r = rec["sweep"][i]
                i += 1
                assert (r["epoch"], r["strength"], r["tau"]) == (e + 1, s, t)
                pred = np.where(risk_va > t, ad_va[e, j], base_va)
                m = bench.metrics(pred, y_va, g_va, n_groups, 1)
                assert abs(m["accuracy"] - r["accuracy"]) < 1e-12, (e, s, t, m, r)
                assert abs(m["worst_group_accuracy"] - r["worst_group_accuracy"]) < 1e-12, (e, s, t, m, r)
    ch = rec["chosen"]
    if ch is not None:
        e, j = ch["epoch"] - 1, strengths.index(ch["strength"])
        pred = np.where(risk_te > ch["tau"], ad_te[e, j], base_te)
    else:
        pred = base_te
    after = res["after"]["summary"]
    m = bench.metrics(pred, y_te, g_te, n_groups, 1)
    assert abs(m["accuracy"] - after["accuracy"]) < 1e-9, (m, after)
    assert abs(m["worst_group_accuracy"] - after["worst_group_accuracy"]) < 1e-9, (m, after)

    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        CACHE / f"{key}_s{seed}.npz",
        y_va=y_va, g_va=g_va, y_te=y_te, g_te=g_te, risk_va=risk_va, risk_te=risk_te,
        p_va=proba_va[:, 1], p_te=proba_te[:, 1], base_va=base_va, base_te=base_te,
        ad_va=ad_va, ad_te=ad_te, taus=taus, strengths=np.array(strengths),
        chosen=np.array([ch["epoch"], ch["strength"], ch["tau"]] if ch else [np.nan] * 3),
        groups=np.array([str(d) for d in distinct]), minority=np.array([str(x) for x in det.minority]),
    )
    log(f"{key} s{seed}: fit {fit_s:.0f} s, chosen {ch and (ch['epoch'], ch['strength'], ch['tau'])}, "
        f"test acc {m['accuracy']:.4f} WGA {m['worst_group_accuracy']:.4f}, minority {det.minority}")


# ------------------------------------------------------------------ stage 2: evaluate


def cell_acc(pred, y, g, n_groups=2):
    """(K, n_cells) accuracies per (group, label) cell of K prediction rows; also counts."""
    pred = np.atleast_2d(pred)
    accs, ns = [], []
    for gg in range(n_groups):
        for yy in (0, 1):
            m = (g == gg) & (y == yy)
            if m.any():
                accs.append((pred[:, m] == yy).mean(1))
                ns.append(m.sum())
    return np.stack(accs, 1), np.array(ns)


def evaluate_all(pred, y, g):
    """accuracy (K,), WGA (K,) of K prediction rows."""
    pred = np.atleast_2d(pred)
    acc = (pred == y).mean(1)
    ca, _ = cell_acc(pred, y, g)
    return acc, ca.min(1)


def halves(y, g, seed, k):
    """k-th random stratified (group x label) split of the validation rows into two halves."""
    rng = np.random.default_rng(7919 * (seed + 1) + k)
    a = np.zeros(len(y), bool)
    for s in np.unique(g * 2 + y):
        ids = rng.permutation(np.flatnonzero(g * 2 + y == s))
        a[ids[: len(ids) // 2]] = True
    return a, ~a


class Sweep:
    """All candidates of one (dataset, seed): validation/test predictions and their figures."""

    def __init__(self, path: Path):
        d = np.load(path)
        self.d = d
        self.y_va, self.g_va, self.y_te, self.g_te = d["y_va"], d["g_va"], d["y_te"], d["g_te"]
        self.taus, self.strengths = d["taus"], d["strengths"]
        E, S, _ = d["ad_va"].shape
        T = len(self.taus)
        self.E, self.S, self.T = E, S, T
        idx = np.array([(e, s, t) for e in range(E) for s in range(S) for t in range(T)])
        self.idx = idx  # candidate -> (epoch idx, strength idx, tau idx)
        fl_va = d["risk_va"][None, :] > self.taus[:, None]  # (T, n)
        fl_te = d["risk_te"][None, :] > self.taus[:, None]
        self.pv = np.where(fl_va[idx[:, 2]], d["ad_va"][idx[:, 0], idx[:, 1]], d["base_va"][None])
        self.pt = np.where(fl_te[idx[:, 2]], d["ad_te"][idx[:, 0], idx[:, 1]], d["base_te"][None])
        self.act_te = fl_te[idx[:, 2]].mean(1)
        self.act_va = fl_va[idx[:, 2]].mean(1)
        self.acc_v, self.wga_v = evaluate_all(self.pv, self.y_va, self.g_va)
        self.acc_t, self.wga_t = evaluate_all(self.pt, self.y_te, self.g_te)
        self.b_acc_v, self.b_wga_v = (x[0] for x in evaluate_all(d["base_va"], self.y_va, self.g_va))
        self.b_acc_t, self.b_wga_t = (x[0] for x in evaluate_all(d["base_te"], self.y_te, self.g_te))
        # per-row paired difference of correctness vs base, on validation
        self.diff = (self.pv == self.y_va).astype(np.int8) - (d["base_va"] == self.y_va)[None].astype(np.int8)

    def on(self, mask):
        """acc, WGA of every candidate and of the base on the validation rows in ``mask``."""
        a, w = evaluate_all(self.pv[:, mask], self.y_va[mask], self.g_va[mask])
        ba, bw = (x[0] for x in evaluate_all(self.d["base_va"][mask], self.y_va[mask], self.g_va[mask]))
        return a, w, ba, bw

    def smooth(self, x):
        """x averaged over the neighbouring taus (same epoch and strength); edges: 2 points."""
        x = x.reshape(self.E, self.S, self.T)
        pad = np.concatenate([x[..., :1] * np.nan, x, x[..., -1:] * np.nan], -1)
        out = np.nanmean(np.stack([pad[..., :-2], pad[..., 1:-1], pad[..., 2:]]), 0)
        return out.reshape(-1)


EPS = 1e-12


def choose(sw: Sweep, passing: np.ndarray, score: np.ndarray | None = None):
    """Index of the chosen candidate: max score (default val WGA), ties -> acc, lower activation."""
    score = sw.wga_v if score is None else score
    ok = np.flatnonzero(passing)
    if len(ok) == 0:
        return None
    keys = np.lexsort((sw.act_va[ok], -sw.acc_v[ok], -np.round(score[ok], 12)))
    return int(ok[keys[0]])


def base_pass(sw: Sweep) -> np.ndarray:
    """Rule (a)'s filter: val acc >= base val acc and val WGA > base val WGA."""
    return (sw.acc_v >= sw.b_acc_v - EPS) & (sw.wga_v > sw.b_wga_v + EPS)


def margin_pass(sw: Sweep, z: float) -> np.ndarray:
    n = sw.diff.shape[1]
    mean = sw.diff.mean(1)
    se = sw.diff.std(1, ddof=1) / math.sqrt(n)
    return mean >= z * se - EPS


def half_pass(sw: Sweep, seed: int, k_splits: int, need: int | None = None) -> np.ndarray:
    """Passes acc floor and WGA gain on both halves in >= need of k_splits random split-halves."""
    need = k_splits if need is None else need
    count = np.zeros(len(sw.acc_v), int)
    for k in range(k_splits):
        ok = np.ones(len(sw.acc_v), bool)
        for m in halves(sw.y_va, sw.g_va, seed, k):
            a, w, ba, bw = sw.on(m)
            ok &= (a >= ba - EPS) & (w > bw + EPS)
        count += ok
    return count >= need


def half_mean_wga(sw: Sweep, seed: int) -> np.ndarray:
    out = 0
    for m in halves(sw.y_va, sw.g_va, seed, 0):
        out = out + sw.on(m)[1] / 2
    return out


def lcb_pass(sw: Sweep, z: float, tol: float = 0.003) -> np.ndarray:
    """Paired lower confidence bound of the accuracy change >= -tol (on top of rule a's floor)."""
    n = sw.diff.shape[1]
    return sw.diff.mean(1) - z * sw.diff.std(1, ddof=1) / math.sqrt(n) >= -tol - EPS


def wga_lcb(sw: Sweep, z: float = 1.0) -> np.ndarray:
    """min over (group, label) cells of (cell accuracy - z * its binomial SE)."""
    ca, ns = cell_acc(sw.pv, sw.y_va, sw.g_va)
    return (ca - z * np.sqrt(ca * (1 - ca) / ns)).min(1)


def bootstrap(sw: Sweep, seed: int, b: int = 200):
    """Stratified (group x label) bootstrap of validation: P(acc_cand >= acc_base), mean WGA."""
    rng = np.random.default_rng(31337 + seed)
    cell = sw.g_va * 2 + sw.y_va
    W = np.zeros((len(cell), b))
    for c in np.unique(cell):
        ids = np.flatnonzero(cell == c)
        for k in range(b):
            W[ids, k] = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))
    C = (sw.pv == sw.y_va).astype(np.float32)
    Cb = (sw.d["base_va"] == sw.y_va).astype(np.float32)
    dacc = (C - Cb[None]) @ W  # (K, b), paired
    wga = np.full(dacc.shape, np.inf)
    for c in np.unique(cell):
        m = cell == c
        wga = np.minimum(wga, (C[:, m] @ W[m]) / W[m].sum(0))
    return (dacc >= -1e-9).mean(1), wga.mean(1)


def rules(sw: Sweep, seed: int) -> dict[str, int | None]:
    a = base_pass(sw)
    last = sw.idx[:, 0] == sw.E - 1
    coarse_t = np.isin(np.round(sw.taus[sw.idx[:, 2]], 2), [0.25, 0.5, 0.75])
    s_acc, s_wga = sw.smooth(sw.acc_v), sw.smooth(sw.wga_v)
    smooth_floor = s_acc >= sw.b_acc_v - EPS
    out: dict[str, int | None] = {}
    out["a current"] = choose(sw, a)
    for z in (0.5, 1.0, 1.64):
        out[f"b margin z={z}"] = choose(sw, a & margin_pass(sw, z))
    out["c split-half (1 split)"] = choose(sw, a & half_pass(sw, seed, 1))
    out["c split-half (5 splits, all)"] = choose(sw, a & half_pass(sw, seed, 5))
    out["c split-half (5 splits, >=4)"] = choose(sw, a & half_pass(sw, seed, 5, 4))
    out["d a + mean half-WGA objective"] = choose(sw, a, half_mean_wga(sw, seed))
    out["d a + smoothed-WGA objective"] = choose(sw, a, s_wga)
    out["d a + smoothed acc floor + smoothed WGA"] = choose(sw, a & smooth_floor, s_wga)
    out["e last epoch only"] = choose(sw, a & last)
    out["e taus {.25,.5,.75} only"] = choose(sw, a & coarse_t)
    out["e last epoch + taus {.25,.5,.75}"] = choose(sw, a & last & coarse_t)
    for z in (0.5, 1.0):
        out[f"e margin z={z} + smoothed WGA"] = choose(sw, a & margin_pass(sw, z), s_wga)
        out[f"e margin z={z} + smoothed floor + smoothed WGA"] = choose(sw, a & margin_pass(sw, z) & smooth_floor,
                                                                         s_wga)
        out[f"e margin z={z} + last epoch"] = choose(sw, a & margin_pass(sw, z) & last)
    out["e margin z=1.0 + split-half(5, all)"] = choose(sw, a & margin_pass(sw, 1.0) & half_pass(sw, seed, 5))
    for z in (1.0, 1.64):
        out[f"f a + paired LCB(z={z}) of dacc >= -0.3"] = choose(sw, a & lcb_pass(sw, z))
        out[f"f a + paired LCB(z={z}) >= -0.3, WGA-LCB objective"] = choose(sw, a & lcb_pass(sw, z), wga_lcb(sw))
    out["f a, WGA-LCB objective"] = choose(sw, a, wga_lcb(sw))
    out["f margin z=0.5, WGA-LCB objective"] = choose(sw, a & margin_pass(sw, 0.5), wga_lcb(sw))
    p_ok, bwga = bootstrap(sw, seed)
    for q in (0.7, 0.8, 0.9):
        out[f"g a + bootstrap P(dacc>=0) >= {q}, boot-mean WGA"] = choose(sw, a & (p_ok >= q), bwga)
    out["g a, boot-mean WGA objective"] = choose(sw, a, bwga)
    return out


def group_thresholds(sw: Sweep, z: float | None = None):
    """ERM post-processing: a threshold per group on p(positive), chosen on validation by rule (a)
    (optionally with the paired margin z); returns test (acc, WGA, share of rows changed) or base."""
    d = sw.d
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    pv, pt = d["p_va"], d["p_te"]
    gv, gt = sw.g_va, sw.g_te
    # every (t0, t1) pair: predictions on validation
    P0 = (pv[None, :] > grid[:, None])  # (G, n) for threshold t
    t0, t1 = np.meshgrid(np.arange(len(grid)), np.arange(len(grid)), indexing="ij")
    t0, t1 = t0.ravel(), t1.ravel()
    pred = np.where(gv[None] == 0, P0[t0], P0[t1]).astype(np.int8)
    acc, wga = evaluate_all(pred, sw.y_va, sw.g_va)
    base = d["base_va"]
    ok = (acc >= sw.b_acc_v - EPS) & (wga > sw.b_wga_v + EPS)
    if z is not None:
        diff = (pred == sw.y_va).astype(np.int8) - (base == sw.y_va)[None].astype(np.int8)
        se = diff.std(1, ddof=1) / math.sqrt(len(sw.y_va))
        ok &= diff.mean(1) >= z * se - EPS
    c = np.flatnonzero(ok)
    if len(c) == 0:
        return sw.b_acc_t, sw.b_wga_t, 0.0
    dist = np.abs(grid[t0[c]] - 0.5) + np.abs(grid[t1[c]] - 0.5)
    best = c[np.lexsort((dist, -acc[c], -np.round(wga[c], 12)))[0]]
    ptest = np.where(gt == 0, pt > grid[t0[best]], pt > grid[t1[best]]).astype(np.int8)
    a, w = evaluate_all(ptest, sw.y_te, sw.g_te)
    return a[0], w[0], float((ptest != d["base_te"]).mean())


def evaluate(datasets: list[str], seeds: int) -> str:
    lines = []
    for key in datasets:
        rows: dict[str, list[tuple]] = {}
        ref: dict[str, list[tuple]] = {}
        for seed in range(seeds):
            path = CACHE / f"{key}_s{seed}.npz"
            if not path.is_file():
                continue
            sw = Sweep(path)
            for name, c in rules(sw, seed).items():
                if c is None:
                    r = (seed, 0.0, 0.0, 0.0, None, sw.b_acc_v, sw.b_acc_v, sw.b_wga_v, sw.b_wga_v)
                else:
                    e, s, t = sw.idx[c]
                    r = (seed, sw.acc_t[c] - sw.b_acc_t, sw.wga_t[c] - sw.b_wga_t, sw.act_te[c],
                         (int(e) + 1, float(sw.strengths[s]), float(sw.taus[t])),
                         sw.acc_v[c], sw.b_acc_v, sw.wga_v[c], sw.b_wga_v)
                rows.setdefault(name, []).append(r)
            for name, z in (("ERM per-group thresholds, rule a", None),
                            ("ERM per-group thresholds, a + margin z=1", 1.0)):
                a, w, ch = group_thresholds(sw, z)
                ref.setdefault(name, []).append((seed, a - sw.b_acc_t, w - sw.b_wga_t, ch))
            # what the sweep holds at all: the best test WGA among candidates whose TEST accuracy
            # is within 0.3 points of the base (chosen on test: a diagnostic, never a rule)
            ok = np.flatnonzero(sw.acc_t >= sw.b_acc_t - 0.003 - 1e-12)
            best = ok[np.argmax(sw.wga_t[ok])]
            ref.setdefault("(diagnostic) best candidate chosen on test, test Δacc >= -0.3", []).append(
                (seed, sw.acc_t[best] - sw.b_acc_t, sw.wga_t[best] - sw.b_wga_t, sw.act_te[best]))
        if not rows:
            continue
        n = len(next(iter(rows.values())))
        lines += [f"### {key} ({n} seeds)", "",
                  "| rule | test Δacc (pts) | test ΔWGA (pts) | seeds Δacc ≥ −0.3 | test activation "
                  "| per seed Δacc / ΔWGA |",
                  "|---|---|---|---|---|---|"]

        def ms(v):
            v = 100 * np.array(v)
            return f"{v.mean():+.2f} ± {v.std(ddof=1) if len(v) > 1 else 0:.2f}"

        for name, rs in list(rows.items()) + list(ref.items()):
            da, dw = [r[1] for r in rs], [r[2] for r in rs]
            act = np.mean([r[3] for r in rs])
            ok = sum(x >= -0.003 - 1e-12 for x in da)
            flag = " **both**" if np.mean(da) >= -0.003 - 1e-12 and np.mean(dw) >= 0.05 else ""
            per = ", ".join(f"{100 * r[1]:+.2f}/{100 * r[2]:+.1f}" for r in rs)
            act_s = f"{act:.2f}" if not name.startswith("ERM") else f"{act:.2f} (rows changed)"
            if name.startswith("(diagnostic)"):
                flag = ""
            lines.append(f"| {name}{flag} | {ms(da)} | {ms(dw)} | {ok}/{len(rs)} | {act_s} | {per} |")
        lines += ["", "Chosen candidates (epoch, strength, tau; val acc / WGA vs base) per seed:", ""]
        for name, rs in rows.items():
            ch = "; ".join(f"s{r[0]} {r[4] if r[4] else 'off'}"
                           + (f" va {100 * (r[5] - r[6]):+.2f}/{100 * (r[7] - r[8]):+.1f}" if r[4] else "")
                           for r in rs)
            lines.append(f"- {name}: {ch}")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["collect", "evaluate"])
    ap.add_argument("--datasets", default="adult,compas")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    ds = args.datasets.split(",")
    if args.stage == "collect":
        for key in ds:
            for seed in range(args.seeds):
                if (CACHE / f"{key}_s{seed}.npz").is_file():
                    log(f"{key} s{seed}: cached")
                    continue
                collect(key, seed)
    else:
        text = evaluate(ds, args.seeds)
        print(text)
        (OUT / "tables.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
