"""fairfix on Spark ``local[2]`` beside the local engines: the audit and the scoring.

    .venv/bin/python benchmarks/spark_local.py                 # 1e7 rows in 10 files, 2M rows scored (minutes)
    .venv/bin/python benchmarks/spark_local.py --quick         # smoke test

S1  audit: ``fairfix audit DIR --engine spark`` vs ``fairfix audit DIR`` (the local
    default engine), both whole process as the console script, interleaved round
    by round, medians; the two JSON reports must be identical (agreement), and
    the start-up of a Spark session (JVM) is timed on its own so both ways of
    reading the figure are there.
S2  scoring: ``fairfix.spark.predict(spark.read.parquet(IN), MODEL, id_column="id")``
    written to Parquet with a warm ``local[2]`` session (the job alone: shipping
    the model, loading it once per Python worker, scoring, writing), vs
    ``fairfix.predict.predict`` in-process over the same file, on one core and on
    two (torch threads), medians; the outputs are compared row by row (labels
    exact, scores within 1e-6).

Data: S1 reuses the rows of benchmarks/audit_many_files.py (``bench-data/many_*``);
S2 the Adult MLP and the resampled Adult rows of benchmarks/predict_speed.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import predict_speed  # noqa: E402  (the model and the scoring input)
from audit_many_files import AUDIT, make_files  # noqa: E402  (the audit rows)
from audit_speed import CHILD_ENV as _ENV  # noqa: E402
from audit_speed import ROOT, fairfix_exe  # noqa: E402

# local[2] for every Spark the script starts (a child fairfix audit --engine spark included).
CHILD_ENV = {**_ENV, "PYSPARK_SUBMIT_ARGS": "--master local[2] pyspark-shell", "PYSPARK_PYTHON": sys.executable}

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the Python workers of S2


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=CHILD_ENV)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return dt, r.stdout


def spark_start_child() -> list[str]:
    code = ("from pyspark.sql import SparkSession\n"
            "s = SparkSession.builder.master('local[2]').config('spark.ui.enabled', 'false').getOrCreate()\n"
            "s.range(1).count(); s.stop()\n")
    return [sys.executable, "-c", code]


def audit_round(folder: Path, runs: int) -> dict:
    exe = fairfix_exe()
    cmds = {
        "local": [*exe, "audit", str(folder), *AUDIT],
        "spark": [*exe, "audit", str(folder), *AUDIT, "--engine", "spark"],
        "spark session alone": spark_start_child(),
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    outputs: dict[str, str] = {}
    names = list(cmds)
    for r in range(runs + 1):  # round 0 warms the page cache and is dropped
        for name in names[r % len(names):] + names[: r % len(names)]:
            dt, out = timed(cmds[name])
            if r:
                times[name].append(dt)
            outputs.setdefault(name, out)
    same = json.loads(outputs["local"]) == json.loads(outputs["spark"])
    return {"times": times, "medians": {k: statistics.median(v) for k, v in times.items()}, "identical_json": same}


def score_round(model: Path, src: Path, runs: int, work: Path) -> dict:
    import numpy as np
    import pandas as pd
    import torch
    from pyspark.sql import SparkSession

    import fairfix.spark
    from fairfix.models import load_model
    from fairfix.predict import predict

    loaded = load_model(model)
    rows = predict_speed.rows_of(src)
    res: dict = {"rows": rows, "local": {}, "spark": []}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            predict(str(src), loaded, work / "local.parquet", id_column="id", force=True)
            ts.append(time.perf_counter() - t0)
        res["local"][f"{threads} thread(s)"] = statistics.median(ts)
    torch.set_num_threads(1)
    # One input split per row group (1M rows each), so both local[2] cores score.
    split = max(1 << 20, -(-src.stat().st_size // max(1, -(-rows // predict_speed.CHUNK))))
    spark = (SparkSession.builder.master("local[2]").appName("fairfix-bench").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.files.maxPartitionBytes", str(split)).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        for i in range(runs):
            out = work / f"spark-{i}"
            t0 = time.perf_counter()
            fairfix.spark.predict(spark.read.parquet(str(src)), str(model), id_column="id") \
                .write.mode("overwrite").parquet(str(out))
            res["spark"].append(time.perf_counter() - t0)
        partitions = spark.read.parquet(str(src)).rdd.getNumPartitions()
    finally:
        spark.stop()
    res["spark_partitions"] = partitions
    res["spark_median"] = statistics.median(res["spark"])
    local = pd.read_parquet(work / "local.parquet").sort_values("id").reset_index(drop=True)
    remote = pd.read_parquet(work / f"spark-{runs - 1}").sort_values("id").reset_index(drop=True)
    res["labels_equal"] = bool((local["pred"].to_numpy() == remote["pred"].to_numpy()).all()
                               and (local["id"].to_numpy() == remote["id"].to_numpy()).all())
    res["max_score_diff"] = float(np.abs(local["score"].to_numpy() - remote["score"].to_numpy()).max())
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--rows", type=int, default=10_000_000, help="S1: audit rows (in --files Parquet files)")
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--score-rows", type=int, default=2_000_000, help="S2: rows scored (1M-row row groups)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=ROOT / "bench-data")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.files, args.score_rows, args.runs = 200_000, 4, 20_000, 1
    args.data_dir.mkdir(parents=True, exist_ok=True)
    folder = make_files(args.data_dir, args.rows, args.files)
    model = predict_speed.ensure_model(args.data_dir, args.quick)
    src = predict_speed.make_input(args.data_dir, args.score_rows)
    work = Path(tempfile.mkdtemp(prefix="spark-bench-", dir=args.data_dir))
    try:
        audit = audit_round(folder, args.runs)
        score = score_round(model, src, args.runs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    m = audit["medians"]
    print(f"fairfix on Spark local[2] ({'quick' if args.quick else 'full'}; {machine}; medians of {args.runs})")
    print(f"S1 audit, {args.rows:,} rows in {args.files} Parquet files, whole process:")
    print(f"  fairfix audit DIR (local engine)   {m['local']:.2f} s")
    print(f"  fairfix audit DIR --engine spark   {m['spark']:.2f} s   ({m['spark'] / m['local']:.1f}x the local)")
    print(f"  a bare local[2] session start/stop {m['spark session alone']:.2f} s")
    print(f"  identical JSON: {audit['identical_json']}")
    n = score["rows"]
    print(f"S2 scoring {n:,} rows (Adult MLP), Parquet in and out, in-process, start-up excluded:")
    for k, v in score["local"].items():
        print(f"  fairfix.predict.predict, torch {k:<11} {v:.2f} s   {n / v:,.0f} rows/s")
    print(f"  fairfix.spark.predict local[2] ({score['spark_partitions']} partitions) "
          f"{score['spark_median']:.2f} s   {n / score['spark_median']:,.0f} rows/s")
    print(f"  labels and ids equal: {score['labels_equal']}; max |score difference|: {score['max_score_diff']:.1e}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "audit": audit, "score": score}, indent=2) + "\n")
    ok = audit["identical_json"] and score["labels_equal"] and score["max_score_diff"] <= 1e-6
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
