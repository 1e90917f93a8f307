#!/usr/bin/env python
"""FairNet correction (``fairfix.correct``) vs ERM and five peers: Adult, COMPAS, CelebA attributes, Adult text.

The issue's targets:

1. the no-loss operating point (the guard's choice): test accuracy within 0.3 points of
   the base model, worst-group accuracy up by >= 5 points on Adult and COMPAS and by
   >= 20 points on CelebA;
2. the tau-sweep curve of the corrected model lies above the ThresholdOptimizer and
   ExponentiatedGradient points (GroupDRO, JTT and DFR placed relative to it);
3. with 10% sensitive labels >= 80% of the full-label WGA gain; with none a positive gain.

Usage::

    .venv/bin/python benchmarks/fairnet.py                  # 5/5/3/2 seeds (~90 min, 2 shared cores)
    .venv/bin/python benchmarks/fairnet.py --write-results  # ... + docs/results.md and docs/img
    .venv/bin/python benchmarks/fairnet.py --quick          # smoke run: 1 seed, small data (~5 min)
    .venv/bin/python benchmarks/fairnet.py --datasets adult_text --json T.json   # the text recipe only
    .venv/bin/python benchmarks/fairnet.py --from-json F.json --write-results  # re-render a run
    .venv/bin/python benchmarks/fairnet.py --from-json A.json --from-json T.json --write-results  # merge


The protocol (splits, ERM, what every method is given) is described and shared in
``fairnet_protocol.py``; the datasets are built in ``fairnet_tasks.py``; one (dataset, seed) runs in
``fairnet_run.py``; each peer method has its module (``peer_threshold_optimizer.py``,
``peer_exponentiated_gradient.py``, ``peer_group_dro.py``, ``peer_jtt.py``, ``peer_dfr.py``; GroupDRO and
JTT share ``peer_mlp.py``); the tables, targets and plots are in ``fairnet_report.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from fairnet_protocol import DATA, ROOT, log
from fairnet_report import RESULTS, render, write_results
from fairnet_run import run_seed
from fairnet_tasks import adult_task, adult_text_task, celeba_task, compas_task


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--datasets",
        default="adult,compas,celeba,adult_text",
        help="comma-separated: adult, compas, celeba, adult_text (recipes/adult_text.yaml)",
    )
    ap.add_argument("--seeds", type=int, default=5, help="seeds for Adult and COMPAS")
    ap.add_argument("--celeba-seeds", type=int, default=3)
    ap.add_argument("--text-seeds", type=int, default=2, help="seeds for Adult text (fine-tuned MiniLM)")
    ap.add_argument(
        "--celeba-train-rows",
        type=int,
        default=40_000,
        help="rows of CelebA's official train partition in the dev pool (fixed random subsample)",
    )
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (tiny models: 1 is fastest here)")
    ap.add_argument("--quick", action="store_true", help="1 seed, small data, few epochs (smoke run)")
    ap.add_argument("--json", type=Path, help="write every measurement to this file")
    ap.add_argument(
        "--from-json",
        type=Path,
        action="append",
        help="re-render a saved --json run instead of running; repeat to merge runs (e.g. the "
        "tabular datasets and the text one) into one section, a later file's dataset replacing an "
        "earlier one of the same name; with --json, the merged runs are written there",
    )
    ap.add_argument(
        "--write-results",
        action="store_true",
        help=f"update the section in {RESULTS.relative_to(ROOT)} and the plots in docs/img",
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.from_json:
        all_runs, notes, targets, keys = {}, {}, {}, {}
        sources: list[dict[str, Any]] = []
        for f in args.from_json:
            saved = json.loads(f.read_text())
            for name in saved["runs"]:
                if name in all_runs:
                    log(f"{f}: {name} replaces the runs of an earlier --from-json file")
                    for src in sources:
                        src["datasets"] = [d for d in src["datasets"] if d != name]
            all_runs.update(saved["runs"])
            notes.update(saved["notes"])
            targets.update(saved["wga_targets"])
            keys.update(saved["keys"])
            sources += saved.get("sources") or [
                {
                    "command": saved["command"],
                    "minutes": saved["minutes"],
                    "quick": saved["quick"],
                    "datasets": list(saved["runs"]),
                }
            ]
        sources = [src for src in sources if src["datasets"]]
        quick = any(src["quick"] for src in sources)
    else:
        quick = args.quick
        all_runs, notes, targets, keys = {}, {}, {}, {}
        for key in args.datasets.split(","):
            t0 = time.perf_counter()
            if key == "adult":
                task, seeds = adult_task(quick), args.seeds
            elif key == "compas":
                task, seeds = compas_task(quick, args.data_dir), args.seeds
            elif key == "celeba":
                task, seeds = (
                    celeba_task(quick, args.celeba_train_rows, args.data_dir),
                    args.celeba_seeds,
                )
            elif key == "adult_text":
                task, seeds = adult_text_task(quick), args.text_seeds
            else:
                ap.error(f"unknown dataset {key!r}")
            seeds = 1 if quick else seeds
            log(f"{task.name}: {seeds} seed(s)")
            all_runs[task.name] = [run_seed(task, s, quick) for s in range(seeds)]
            notes[task.name], targets[task.name], keys[task.name] = (
                task.note,
                task.wga_target,
                task.key,
            )
            log(f"{task.name}: {(time.perf_counter() - t0) / 60:.1f} min")
        minutes = (time.perf_counter() - start) / 60
        cmd = (f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:])).strip()
        sources = [{"command": cmd, "minutes": minutes, "quick": quick, "datasets": list(all_runs)}]
    text, results = render(
        all_runs,
        notes,
        targets,
        keys,
        sources,
        write_plots=args.write_results and not quick,
    )
    print(text)
    for what, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {what}: {detail}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {
            "runs": all_runs,
            "notes": notes,
            "wga_targets": targets,
            "keys": keys,
            "minutes": sum(src["minutes"] for src in sources),
            "command": sources[0]["command"],
            "quick": quick,
        }
        if len(sources) > 1:  # a merge: every run's own command
            doc["sources"] = sources
        args.json.write_text(json.dumps(doc, indent=1))
    if args.write_results and not quick:
        write_results(text)
        log(f"updated {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
