"""What the cross-fitted correction costs on the tabular and vision paths: whole processes, medians.

- ``fairfix run recipes/digits_color.yaml`` (train the CNN, audit, detect, correct with 5 folds,
  audit, compare): target under 1 minute;
- ``fairfix correct adult:train --model M --label income --group sex --eval adult:test`` with the
  defaults (5 folds x 2 plans x 400 steps, then the shipped adapter), on the MLP that
  ``fairfix train adult:train`` makes (trained once, not timed): target under 2 minutes.

Each command runs ``--runs`` times (median printed, all runs in brackets); the share of the time
spent in the cross-fitted folds is read from the progress lines (``adapter: ... steps (N s)``).

    python benchmarks/correct_cost.py --runs 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAIRFIX = [sys.executable, "-m", "fairfix"]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Wall seconds of one process, and the seconds of each progress stage it printed."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    stages = {m.group(1): float(m.group(2)) for m in re.finditer(r"^fairfix: ([a-z_ ()]+): .*\(([\d.]+) s\)$",
                                                                  proc.stderr, re.M)}
    return wall, stages


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "FAIRFIX_NO_PROGRESS"}  # stderr is a pipe: one line a stage
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([*FAIRFIX, "train", "adult:train", "--label", "income", "--group", "sex", "--group", "race",
                        "--out", f"{tmp}/adult_model", "-q"], check=True, cwd=ROOT, env=env, capture_output=True)
        jobs = {
            "fairfix run recipes/digits_color.yaml": (
                [*FAIRFIX, "run", "recipes/digits_color.yaml", "--out", f"{tmp}/digits", "--force"], 60.0),
            "fairfix correct adult:train (defaults)": (
                [*FAIRFIX, "correct", "adult:train", "--model", f"{tmp}/adult_model", "--label", "income", "--group",
                 "sex", "--eval", "adult:test", "--out", f"{tmp}/adult_bundle", "--force", "--format", "json",
                 "--output", f"{tmp}/adult_compare.json"], 120.0),
        }
        for name, (cmd, target) in jobs.items():
            walls, folds = [], []
            for _ in range(args.runs):
                wall, stages = timed(cmd, env)
                walls.append(wall)
                folds.append(stages.get("adapter", float("nan")))
            med = statistics.median(walls)
            rows.append((name, med, walls, statistics.median(folds), target))
    print(f"{'command':<42} {'median':>8}  {'runs':<24} {'folds (adapter stage)':>22}  target")
    for name, med, walls, fold_s, target in rows:
        runs = ", ".join(f"{w:.1f}" for w in walls)
        verdict = "PASS" if med < target else "FAIL"
        print(f"{name:<42} {med:>7.1f}s  [{runs}]{'':<4} {fold_s:>10.1f}s ({100 * fold_s / med:4.0f}%)  "
              f"< {target:.0f} s: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
