"""The trust table: does the shipped bundle ever make the worst group or accuracy worse on new rows?

For every seed of every task, ``fairfix correct`` with its defaults (cross-fitted guard) and
the bundle it ships, judged on the task's test rows, which nothing chose from:

- Adult (sex), COMPAS (race), CelebA attributes (Male): the benchmark protocol's ERM MLP
  (benchmarks/fairnet_protocol.py: trained on the dev rows outside a validation split), the
  correction on every dev row;
- Adult, two attributes (sex then race: ``correct --group sex --group race``);
- coloured digits: the recipe's base on half the training images, the correction on the other
  half (``model.correction_rows: 0.5``), and a small-data regime (the base on 900 images, the
  correction on the other 300).

A seed breaks trust when the bundle lowers test worst-group accuracy by more than 1 point or
test accuracy by more than 0.3 points.  Prints one line per (task, seed), then the table;
``--write-results`` puts it in docs/results.md ("The trust table").

    OMP_NUM_THREADS=1 python benchmarks/trust.py --seeds 5 --write-results
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

SECTION = "## The trust table: what the shipped bundle does on new rows"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WGA_LIMIT, ACC_LIMIT = 0.01, 0.003


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tabular(key: str, seed: int, quick: bool, groups: list[str] | None = None) -> dict[str, Any]:
    """ERM vs the shipped bundle on test for one tabular task and seed (default options)."""
    from fairnet_protocol import erm_model, seed_split
    from fairnet_tasks import adult_task, celeba_task, compas_task

    import fairfix
    from fairfix.correct import CorrectConfig
    from fairfix.correct.run import correct

    task = {"adult": lambda: adult_task(quick), "compas": lambda: compas_task(quick, DATA),
            "celeba": lambda: celeba_task(quick, 20_000 if quick else 60_000, DATA)}[key]()
    split = seed_split(task, seed)
    model, _, _ = erm_model(task, split.train, seed, quick)
    cfg = CorrectConfig(seed=seed, **({"steps": 50, "folds": 2} if quick else {}))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if groups:
            from fairfix.correct.progressive import correct_many

            corrected, res = correct_many(split.dev, model, label=task.label, groups=groups, config=cfg,
                                          eval_data=split.test)
            on = [a["adapter_enabled"] for a in res["compare"]["attributes"]]
        else:
            corrected, res = correct(split.dev, model, label=task.label, group=task.group, config=cfg,
                                     eval_data=split.test)
            on = [res["record"]["adapter_enabled"]]
        records = res["records"] if groups else [res["record"]]
    seconds = time.perf_counter() - t0
    audit_groups = groups or [task.group]
    before = fairfix.audit(split.test, label=task.label, group=audit_groups[:1], model=model, bootstrap=0)
    after = fairfix.audit(split.test, label=task.label, group=audit_groups[:1], model=corrected, bootstrap=0)
    row = {"task": task.name + (" (" + " then ".join(groups) + ")" if groups else ""), "seed": seed,
           "rows": len(split.dev), "seconds": seconds, "adapter_on": on,
           "base": {k: before.summary[k] for k in ("accuracy", "worst_group_accuracy")},
           "after": {k: after.summary[k] for k in ("accuracy", "worst_group_accuracy")},
           "evidence": [r["evidence"] for r in records]}
    if groups:  # the second attribute's worst cell too
        b2 = fairfix.audit(split.test, label=task.label, group=groups[1:2], model=model, bootstrap=0)
        a2 = fairfix.audit(split.test, label=task.label, group=groups[1:2], model=corrected, bootstrap=0)
        row["second"] = {"base": b2.summary["worst_group_accuracy"], "after": a2.summary["worst_group_accuracy"]}
    return row


def digits(seed: int, share: float, name: str) -> dict[str, Any]:
    import shortcut

    runs = shortcut.run_seed(seed, False, correction_rows=share,
                             variants={"fairfix": {"mode": "auto", "frac": 1.0}})
    erm = next(r for r in runs if r["method"] == "ERM")
    fx = next(r for r in runs if r["method"] == "fairfix")
    return {"task": name, "seed": seed, "rows": fx["rows"], "seconds": fx["seconds"], "adapter_on": [fx["enabled"]],
            "base": {"accuracy": erm["accuracy"], "worst_group_accuracy": erm["wga"]},
            "after": {"accuracy": fx["accuracy"], "worst_group_accuracy": fx["wga"]}, "evidence": [fx["evidence"]],
            "train_dist": {"base": erm["train_dist_accuracy"], "after": fx["train_dist_accuracy"]}}


TASKS = {
    "digits": lambda seed, quick: digits(seed, 0.5, "coloured digits (600 + 600)"),
    "digits_small": lambda seed, quick: digits(seed, 0.25, "coloured digits, small (900 + 300)"),
    "adult": lambda seed, quick: tabular("adult", seed, quick),
    "compas": lambda seed, quick: tabular("compas", seed, quick),
    "celeba": lambda seed, quick: tabular("celeba", seed, quick),
    "adult2": lambda seed, quick: tabular("adult", seed, quick, groups=["sex", "race"]),
}


def table(runs: list[dict[str, Any]]) -> str:
    lines = ["| task | seeds | rows the correction got | test accuracy: base -> bundle | test WGA: base -> bundle "
             "| Δ WGA per seed (points) | Δ accuracy per seed (points) | adapter on | seeds breaking trust |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task in dict.fromkeys(r["task"] for r in runs):
        rs = [r for r in runs if r["task"] == task]
        da = [100 * (r["after"]["accuracy"] - r["base"]["accuracy"]) for r in rs]
        dw = [100 * (r["after"]["worst_group_accuracy"] - r["base"]["worst_group_accuracy"]) for r in rs]
        broken = sum(w < -100 * WGA_LIMIT - 1e-9 or a < -100 * ACC_LIMIT - 1e-9 for w, a in zip(dw, da, strict=True))

        def mean(key: str, side: str, rows: list[dict[str, Any]] = rs) -> float:
            return 100 * float(np.mean([r[side][key] for r in rows]))

        on = sum(any(r["adapter_on"]) for r in rs)  # several attributes: any of their adapters
        lines.append(
            f"| {task} | {len(rs)} | {rs[0]['rows']} "
            f"| {mean('accuracy', 'base'):.1f} -> {mean('accuracy', 'after'):.1f} "
            f"| {mean('worst_group_accuracy', 'base'):.1f} -> {mean('worst_group_accuracy', 'after'):.1f} "
            f"| {', '.join(f'{v:+.1f}' for v in dw)} | {', '.join(f'{v:+.2f}' for v in da)} | {on}/{len(rs)} "
            f"| **{broken}/{len(rs)}** |")
    lines += ["", "Per seed (test %, base -> bundle; the guard's evidence: its rows and the rows in the base's worst "
              "(group, label) cell of them, per attribute):", "",
              "| task | seed | test accuracy | test WGA | adapter | guard's rows | rows in the worst cell |",
              "|---|---|---|---|---|---|---|"]
    for r in runs:
        ev = r.get("evidence") or []
        lines.append(
            f"| {r['task']} | {r['seed']} | {100 * r['base']['accuracy']:.1f} -> {100 * r['after']['accuracy']:.1f} "
            f"| {100 * r['base']['worst_group_accuracy']:.1f} -> {100 * r['after']['worst_group_accuracy']:.1f} "
            f"| {', '.join('on' if on else 'off' for on in r['adapter_on'])} "
            f"| {', '.join(str(e['rows']) for e in ev) or '-'} "
            f"| {', '.join(str(e.get('worst_cell_rows', '-')) for e in ev) or '-'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    ap.add_argument("--quick", action="store_true", help="subsamples and short budgets (smoke run)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--from-json", type=Path)
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.from_json:
        runs = json.loads(args.from_json.read_text())
    else:
        runs = json.loads(args.json.read_text()) if args.json and args.json.is_file() else []
        done = {(r["key"], r["seed"]) for r in runs}
        for key in args.tasks.split(","):
            for seed in range(args.seeds):
                if (key, seed) in done:
                    continue
                row = {"key": key, **TASKS[key](seed, args.quick)}
                runs.append(row)
                log(json.dumps(row))
                if args.json:
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(runs, indent=1))
    text = table(runs)
    print(text)
    if args.write_results:
        from _results import write_section

        n = len({r["seed"] for r in runs})
        write_section(SECTION, f"{SECTION}\n\n`OMP_NUM_THREADS=1 python benchmarks/trust.py --seeds {n} "
                      f"--write-results` (test rows; nothing chosen on them; a seed breaks trust when the bundle "
                      f"lowers test WGA by more than {100 * WGA_LIMIT:g} point or test accuracy by more than "
                      f"{100 * ACC_LIMIT:g} points):\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
