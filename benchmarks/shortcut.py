"""FairNet in its own regime: a CNN that under-serves the cells a shortcut mislabels (coloured digits).

The task is ``recipes/digits_color.yaml``'s (fairfix/datasets/digits_color.py): digits 5-9 vs 0-4,
drawn in red or green, the colour agreeing with the label on 90% of the training images and on half
of the test images.  Per seed, the same protocol for every method:

- the rows: the recipe's split of the 1,200 training images (``model.correction_rows``, 0.5 by
  default, ``--correction-rows``): the base trains on one part, the correction gets the other,
  which the base never saw;
- the base: the recipe's small CNN (``fairfix.models.vision:small_cnn``) trained by fairfix
  (ERM, the recipe's epochs / lr / patience) with that seed;
- fairfix: ``fairfix.correct`` with the recipe's settings at that seed (detector fitted inside,
  the guard cross-fitted on the correction rows), with the group label on every correction row
  (full), on 10% of them (partial: the adapter trains on every row, the detector's groups
  standing in where the label is missing, and the guard's cells take them when the detector
  beats chance on its held-out labelled rows), or on none (the colour column is dropped before
  fairfix sees the rows: mode none, the guard's cells are pseudo-cells);
  the bundle is whatever the guard chose -- nothing is chosen on test;
- peers on the same CNN and rows: GroupDRO (online, over (colour, label) cells) and JTT (one-epoch
  ERM identifies the errors, upweighted by lambda in {5, 20}) retrain the CNN from scratch on the
  base's rows, early-stopped on the correction rows' worst-group accuracy; DFR refits the base's
  head on the correction rows (cell-balanced, C chosen on half of them).

Test accuracy, test worst-group accuracy, and the accuracy in the training distribution measured
on unseen rows: the test cells reweighted to their shares among the training rows (colour agrees
with the label on 90%).  ``--ablation``: fairfix (full labels) with each objective (both /
triplet / task) and each balance (sample / weight).  Prints one line per (seed, method) and a
table of means, and for the label regimes every seed with the detector against the truth and
each scarce regime's gain as a share of the full-label gain; ``--write-results`` puts the tables in
docs/results.md ("FairNet in its regime: coloured digits"; with ``--no-peers``, "Scarce group
labels: coloured digits (#22)").  ``--json`` saves the raw runs.

    OMP_NUM_THREADS=1 python benchmarks/shortcut.py --seeds 5 --write-results
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SECTION = "## FairNet in its regime: coloured digits"
SCARCE = "## Scarce group labels: coloured digits (#22)"
RECIPE = {"epochs": 30, "batch_size": 32, "lr": 0.003, "patience": 10}  # recipes/digits_color.yaml, model.train
CORRECT: dict[str, Any] = {"steps": 400, "batch_size": 64, "lr": 0.003}  # recipes/digits_color.yaml, correct
CNN = "fairfix.models.vision:small_cnn"


ABLATION = {f"fairfix {o}, {b}": {"config": {"objective": o, "balance": b}}
            for o in ("both", "triplet", "task") for b in ("sample", "weight")}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cells_metrics(pred: np.ndarray, y: np.ndarray, g: np.ndarray) -> dict[str, float]:
    """Accuracy and worst (colour, label) cell accuracy; g is 0/1."""
    accs = [float((pred[(g == a) & (y == c)] == c).mean()) for a in (0, 1) for c in (0, 1)
            if ((g == a) & (y == c)).any()]
    return {"accuracy": float((pred == y).mean()), "wga": min(accs)}


def cnn_loop(x: Any, y: Any, x_va: Any, y_va: np.ndarray, g_va: np.ndarray, seed: int, batch_loss: Any,
             epochs: int, select: bool = True) -> Any:
    """The peers' CNN loop: the recipe's optimiser, batches and epochs; early stop on validation WGA."""
    import torch

    from fairfix.models.vision import small_cnn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = small_cnn()
        opt = torch.optim.AdamW(net.parameters(), lr=RECIPE["lr"], weight_decay=1e-5)
        gen = torch.Generator().manual_seed(seed)
        best, best_epoch, best_state = -1.0, -1, None
        for epoch in range(epochs):
            net.train()
            perm = torch.randperm(len(x), generator=gen)
            for s in range(0, len(perm), RECIPE["batch_size"]):
                idx = perm[s : s + RECIPE["batch_size"]]
                loss = batch_loss(net, idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if not select:
                continue
            net.eval()
            with torch.no_grad():
                wga = cells_metrics(net(x_va).argmax(1).numpy(), y_va, g_va)["wga"]
            if wga > best + 1e-12:
                best, best_epoch = wga, epoch
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            if epoch - best_epoch >= RECIPE["patience"]:
                break
        if select:
            net.load_state_dict(best_state)
    net.eval()
    return net, best


def dro_loss(cells: Any, eta: float = 0.01) -> Any:
    """GroupDRO's online loss (Sagawa et al. 2020) over four (group, label) cells ``cells`` (N,):
    ``(row_losses (B,), row_ids (B,)) -> loss``, the cells' weights updated at every call."""
    import torch

    q = torch.full((4,), 0.25)

    def loss(row_losses: Any, idx: Any) -> Any:
        nonlocal q
        c = cells[idx]
        cnt = torch.bincount(c, minlength=4).float()
        cell_loss = torch.zeros(4).index_add(0, c, row_losses) / cnt.clamp(min=1)
        q = q * torch.exp(eta * cell_loss.detach())
        q = q / q.sum()
        return (q * cell_loss).sum()

    return loss


def group_dro(x: Any, y: Any, g: Any, x_va: Any, y_va: np.ndarray, g_va: np.ndarray, seed: int,
              eta: float = 0.01) -> Any:
    import torch.nn.functional as F

    dro = dro_loss(g * 2 + y, eta)

    def batch_loss(net: Any, idx: Any) -> Any:
        return dro(F.cross_entropy(net(x[idx]), y[idx], reduction="none"), idx)

    return cnn_loop(x, y, x_va, y_va, g_va, seed, batch_loss, RECIPE["epochs"])[0]


def jtt(x: Any, y: Any, x_va: Any, y_va: np.ndarray, g_va: np.ndarray, seed: int,
        lambdas: tuple[float, ...] = (5.0, 20.0)) -> Any:
    import torch
    import torch.nn.functional as F

    def weighted(w: Any) -> Any:
        return lambda net, idx: (w[idx] * F.cross_entropy(net(x[idx]), y[idx], reduction="none")).sum() / w[idx].sum()

    ident, _ = cnn_loop(x, y, x_va, y_va, g_va, seed, weighted(torch.ones(len(y))), 1, select=False)
    with torch.no_grad():
        err = (ident(x).argmax(1) != y).float()
    fits = [cnn_loop(x, y, x_va, y_va, g_va, seed, weighted(1.0 + (lam - 1.0) * err), RECIPE["epochs"])
            for lam in lambdas]
    return max(fits, key=lambda f: f[1])[0]


def dfr(f_va: np.ndarray, y_va: np.ndarray, g_va: np.ndarray, f_te: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    cells = g_va * 2 + y_va
    half = np.zeros(len(y_va), bool)
    for c in np.unique(cells):
        ids = rng.permutation(np.flatnonzero(cells == c))
        half[ids[: len(ids) // 2]] = True

    def fit(rows: np.ndarray, c_value: float) -> Any:
        scaler = StandardScaler().fit(f_va[rows])
        groups = [rows[cells[rows] == c] for c in np.unique(cells[rows])]
        m = min(len(r) for r in groups)
        coefs, bs = [], []
        for _ in range(5):
            pick = np.concatenate([rng.choice(r, m, replace=False) for r in groups])
            lr = LogisticRegression(C=c_value, l1_ratio=1.0, solver="liblinear", random_state=seed)
            lr.fit(scaler.transform(f_va[pick]), y_va[pick])
            coefs.append(lr.coef_)
            bs.append(lr.intercept_)
        return scaler, np.mean(coefs, 0), float(np.mean(bs))

    def predict(fitted: Any, f: np.ndarray) -> np.ndarray:
        scaler, coef, b = fitted
        return ((scaler.transform(f) @ coef.T).ravel() + b > 0).astype(np.int64)

    grid = (1.0, 0.3, 0.1, 0.03)
    a, b = np.flatnonzero(half), np.flatnonzero(~half)
    best = max(grid, key=lambda c: cells_metrics(predict(fit(a, c), f_va[b]), y_va[b], g_va[b])["wga"])
    return predict(fit(np.arange(len(y_va)), best), f_te)


def detector_quality(corrected: Any, base: Any, x_te: Any, y_te: np.ndarray, g_te: np.ndarray, x_va: Any,
                     y_va: np.ndarray, g_va: np.ndarray) -> dict[str, Any]:
    """The detector's flags and risk on the test rows against the true colour (reporting only).

    ``group``: TPR / FPR / ROC AUC against the colour the detector calls minority (with labels),
    or against red (no labels: the pseudo-groups are found within each class, so they have no
    colour of their own and AUC 0.5 is their expected figure there); ``cells``: against the
    shortcut cells (colour disagrees with the label: the under-served (colour, label) cells),
    the target of within-class pseudo-groups; ``pseudo_cells``: the pseudo-labels the guard's
    cells were made of (no labels), on the correction rows, against the shortcut cells.
    Nothing here feeds a choice.
    """
    import torch
    from sklearn.metrics import roc_auc_score

    det = corrected.detector

    def rates(truth: np.ndarray, score: np.ndarray, flag: np.ndarray) -> dict[str, float | None]:
        ok = 0 < truth.sum() < len(truth)
        return {"tpr": float(flag[truth].mean()) if truth.any() else None,
                "fpr": float(flag[~truth].mean()) if (~truth).any() else None,
                "auc": float(roc_auc_score(truth, score)) if ok else None}

    with torch.no_grad():
        risk = det.risk(base.representation({"x": x_te}, det.layer).values)
    minority = {str(m) for m in det.minority}
    group = (g_te == 0) if minority == {"green"} else (g_te == 1)
    out = {"rows": "test", "group": rates(group, risk, risk > det.tau),
           "cells": rates(g_te != y_te, risk, risk > det.tau)}
    if det.pseudo is not None:
        p = np.nan_to_num(det.pseudo)
        out["pseudo_cells"] = rates(g_va != y_va, p, p > 0.5)
    return out


def train_dist_accuracy(pred: np.ndarray, y: np.ndarray, g: np.ndarray) -> float:
    """Accuracy in the training distribution, measured on unseen (test) rows: each (colour, label) cell
    weighted by its share of the training rows (colour agrees with the label on 90% of them)."""
    from fairfix.datasets.digits_color import AGREEMENT

    agree = AGREEMENT["train"]
    total = 0.0
    for c in (0, 1):
        share_c = float((y == c).mean())
        for a in (0, 1):
            sel = (g == a) & (y == c)
            w = agree if (a == 1) == (c == 1) else 1 - agree  # g = 1 is red, red goes with label 1
            total += share_c * w * float((pred[sel] == c).mean())
    return total


def run_seed(seed: int, peers: bool, *, correction_rows: float = 0.5, variants: dict[str, dict[str, Any]] | None = None
             ) -> list[dict[str, Any]]:
    """One seed: the base on the rows ``model.correction_rows`` leaves it, fairfix and the peers on the rest."""
    import torch

    from fairfix.correct import CorrectConfig
    from fairfix.correct.run import correct
    from fairfix.datasets.digits_color import PIXELS, load_digits_color
    from fairfix.detect.fit import DetectorConfig
    from fairfix.models import load_model
    from fairfix.recipes import _correct_split
    from fairfix.training import train_model

    train, test = load_digits_color("train"), load_digits_color("test")
    cfg = CorrectConfig(seed=seed, **CORRECT)
    tr, va = _correct_split(train, "label", "colour", [0, 1], cfg, correction_rows)  # base rows, correction rows
    out: list[dict[str, Any]] = []
    y_te, g_te = test["label"].to_numpy(), (test["colour"] == "red").to_numpy().astype(np.int64)
    y_va, g_va = train["label"].to_numpy()[va], (train["colour"] == "red").to_numpy().astype(np.int64)[va]
    corr_frame = train.iloc[va].reset_index(drop=True)

    def scored(name: str, te: np.ndarray, t0: float, **extra: Any) -> None:
        row = {"seed": seed, "method": name, **cells_metrics(te, y_te, g_te),
               "train_dist_accuracy": train_dist_accuracy(te, y_te, g_te), "rows": int(len(va)),
               "seconds": time.perf_counter() - t0, **extra}
        out.append(row)
        log(json.dumps(row))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train_model(train.iloc[tr].reset_index(drop=True), label="label", out=Path(tmp) / "m", features=PIXELS,
                    factory=CNN, seed=seed, **RECIPE)
        base = load_model(Path(tmp) / "m")
        x_te = base.encode(test)["x"]
        x_va = base.encode(corr_frame)["x"]
        with torch.no_grad():
            base_te = base.module(x_te).argmax(1).numpy()
        scored("ERM", base_te, t0)
        rng = np.random.default_rng(seed)
        runs = variants or {"fairfix (full)": {"mode": "auto", "frac": 1.0},
                            "fairfix (10% labels)": {"mode": "auto", "frac": 0.1},
                            "fairfix (no labels)": {"mode": "none", "frac": None}}
        for name, v in runs.items():
            t0 = time.perf_counter()
            frame = corr_frame.copy()
            frac = v.get("frac", 1.0)
            hidden = np.zeros(len(frame), bool)
            if frac is None:  # no labels: fairfix never gets the group column
                frame = frame.drop(columns=["colour"])
            elif frac < 1.0:
                hidden = rng.random(len(frame)) >= frac
                frame["colour"] = frame["colour"].astype(object)
                frame.loc[hidden, "colour"] = None
            vcfg = CorrectConfig(seed=seed, **{**CORRECT, **v.get("config", {})})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                corrected, res = correct(frame, base, label="label", group=None if frac is None else "colour",
                                         detector_config=DetectorConfig(mode=v.get("mode", "auto"), epochs=30,
                                                                        seed=seed),
                                         config=vcfg, eval_data=test)
            with torch.no_grad():
                te = corrected.forward({"x": x_te}).argmax(1).numpy()
            rec = res["record"]
            ch = rec["chosen"]
            scored(name, te, t0, enabled=rec["adapter_enabled"], gate=rec["gate"],
                   chosen=ch and {k: ch[k] for k in ("steps", "strength", "gate", "tau", "wga_gain_lower")},
                   oof=ch and {"accuracy": ch["accuracy"], "wga": ch["worst_group_accuracy"]},
                   hinge_open=rec["correction"]["hinge_open_share"], groups=rec["correction"]["groups"],
                   evidence=rec["evidence"], labelled=int((~hidden).sum()) if frac is not None else 0,
                   detector=detector_quality(corrected, base, x_te, y_te, g_te, x_va, y_va, g_va))
        if peers:
            xt = base.encode(train.iloc[tr])["x"]
            yt = torch.as_tensor(train["label"].to_numpy()[tr])
            gt = torch.as_tensor((train["colour"] == "red").to_numpy().astype(np.int64)[tr])
            for name, fit in (("GroupDRO", lambda: group_dro(xt, yt, gt, x_va, y_va, g_va, seed)),
                              ("JTT", lambda: jtt(xt, yt, x_va, y_va, g_va, seed))):
                t0 = time.perf_counter()
                net = fit()
                with torch.no_grad():
                    te = net(x_te).argmax(1).numpy()
                scored(name, te, t0)
            t0 = time.perf_counter()
            with torch.no_grad(), base.capture_input(base.head_layer) as store:
                base.module(x_va)
                f_va = store["in"].numpy()
                base.module(x_te)
                f_te = store["in"].numpy()
            scored("DFR", dfr(f_va, y_va, g_va, f_te, seed), t0)
    return out


def table(runs: list[dict[str, Any]]) -> str:
    methods = list(dict.fromkeys(r["method"] for r in runs))
    erm = {r["seed"]: r for r in runs if r["method"] == "ERM"}
    lines = ["| method | test accuracy | test WGA | Δ WGA vs ERM | training-distribution accuracy "
             "| seeds with accuracy >= ERM | adapter on |", "|---|---|---|---|---|---|---|"]
    for m in methods:
        rs = [r for r in runs if r["method"] == m]

        def ms(key: str, rows: list[dict[str, Any]] = rs) -> str:
            v = [r[key] for r in rows if r.get(key) is not None]
            return f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}" if v else "-"

        dw = [r["wga"] - erm[r["seed"]]["wga"] for r in rs]
        keep = sum(r["accuracy"] >= erm[r["seed"]]["accuracy"] - 1e-12 for r in rs)
        on = sum(bool(r.get("enabled")) for r in rs) if "enabled" in rs[0] else None
        lines.append(f"| {m} | {ms('accuracy')} | {ms('wga')} | {100 * np.mean(dw):+.1f} | {ms('train_dist_accuracy')} "
                     f"| {keep}/{len(rs)} | {'-' if on is None else f'{on}/{len(rs)}'} |")
    return "\n".join(lines)


def per_seed(runs: list[dict[str, Any]]) -> str:
    """Every seed of the label regimes: the gain, what the guard read, and the detector against the truth."""
    erm = {r["seed"]: r for r in runs if r["method"] == "ERM"}
    lines = ["| seed | regime | test WGA (ERM -> fairfix) | Δ WGA | adapter | group labels given | the guard's cells "
             "| detector on test vs colour: TPR / FPR / AUC | detector on test vs shortcut cells: TPR / FPR / AUC "
             "| pseudo-groups vs shortcut cells: TPR / FPR |", "|---|---|---|---|---|---|---|---|---|---|"]

    def f(d: dict[str, Any] | None, keys: tuple[str, ...]) -> str:
        if not d:
            return "-"
        return " / ".join("-" if d.get(k) is None else f"{d[k]:.2f}" for k in keys)

    for r in runs:
        if "detector" not in r:
            continue
        det, base = r["detector"], erm[r["seed"]]
        lines.append(f"| {r['seed']} | {r['method'].removeprefix('fairfix ')} | {100 * base['wga']:.1f} -> "
                     f"{100 * r['wga']:.1f} | {100 * (r['wga'] - base['wga']):+.1f} | "
                     f"{'on' if r['enabled'] else 'off'} | {r['labelled']} | {r['evidence']['groups']['kind']} | "
                     f"{f(det['group'], ('tpr', 'fpr', 'auc'))} | {f(det['cells'], ('tpr', 'fpr', 'auc'))} | "
                     f"{f(det.get('pseudo_cells'), ('tpr', 'fpr'))} |")
    return "\n".join(lines)


def ratios(runs: list[dict[str, Any]]) -> str:
    """Mean Δ WGA of the scarce-label regimes as a share of the full-label gain (the issue's targets)."""
    erm = {r["seed"]: r["wga"] for r in runs if r["method"] == "ERM"}

    def gain(m: str) -> float | None:
        v = [r["wga"] - erm[r["seed"]] for r in runs if r["method"] == m]
        return float(np.mean(v)) if v else None

    full = gain("fairfix (full)")
    out = []
    for m, target in (("fairfix (10% labels)", 0.8), ("fairfix (no labels)", 0.5)):
        g = gain(m)
        if full and g is not None:
            out.append(f"- {m}: {100 * g:+.1f} of the full-label {100 * full:+.1f} = {g / full:.0%} "
                       f"(target >= {target:.0%}: {'met' if g / full >= target else 'not met'})")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--from-json", type=Path)
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--correction-rows", type=float, default=0.5,
                    help="share of the training rows the base never sees (the correction's rows)")
    ap.add_argument("--ablation", action="store_true",
                    help="fairfix (full labels) with each objective and balance instead of the label regimes")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.from_json:
        runs = json.loads(args.from_json.read_text())
    else:
        runs = []
        for seed in range(args.seeds):
            runs += run_seed(seed, not args.no_peers, correction_rows=args.correction_rows,
                             variants=ABLATION if args.ablation else None)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(runs, indent=1))
    text = table(runs)
    extra = "\n\n".join(x for x in (per_seed(runs), ratios(runs)) if x.strip("|-\n "))
    text = f"{text}\n\n{extra}" if any("detector" in r for r in runs) else text
    print(text)
    if args.write_results:
        from _results import write_section

        n = len({r["seed"] for r in runs})
        # the label regimes alone (--no-peers) go to their own section; the peers' table stays as it was
        section, flag = (SCARCE, " --no-peers") if args.no_peers and not args.ablation else (SECTION, "")
        write_section(section, f"{section}\n\n`OMP_NUM_THREADS=1 python benchmarks/shortcut.py --seeds {n}{flag} "
                      f"--write-results` ({n} seeds; means ± std, %; nothing chosen on test):\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
