#!/usr/bin/env python
"""How fast is ``fairfix predict``, and does it stream?

Usage::

    .venv/bin/python benchmarks/predict_speed.py            # the full run (minutes)
    .venv/bin/python benchmarks/predict_speed.py --quick    # smoke test

What it measures (each ``fairfix predict`` is a subprocess; wall time includes start-up):

P1  throughput: rows/second of ``fairfix predict IN.parquet --model M --id id
    --output OUT.parquet`` on a 1M-row input, median of 3 runs (start-up on a
    10-row input is reported separately, so the per-row rate can be read both ways);
P2  streaming: peak RSS of ``fairfix predict`` on a 10M-row input, measured by a
    wrapper process around the child (``getrusage(RUSAGE_CHILDREN).ru_maxrss``);
    target < 1 GB;
P3  where the time goes: one in-process ``fairfix.predict.predict`` over the 1M-row
    input with each stage timed (Parquet read, Arrow -> pandas, encoding, the
    forward pass, the output columns, the Parquet write).

Every ``fairfix predict`` runs on one core (``OMP_NUM_THREADS=1`` and the child
pinned to one CPU with ``sched_setaffinity``; ``--cores 0`` leaves both alone):
the throughput target is >= 200k rows/s on one core, start-up excluded.

The model is the Adult baseline MLP (``fairfix train adult:train --label income
--group sex --group race``, default settings); the inputs are Adult test rows
resampled with replacement (seeded) plus an ``id`` column, written in 1M-row
row groups.  Model and inputs are cached in ``bench-data/`` (git-ignored).
``--strict`` makes a failed target exit 1.
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
_EXE = Path(PY).with_name("fairfix")
FAIRFIX = [str(_EXE)] if _EXE.exists() else [PY, "-m", "fairfix"]
GEN_VERSION = 1  # bump when the generator changes, so cached inputs are rebuilt
RSS_TARGET_MB = 1024.0
RATE_TARGET = 200_000.0  # rows/s on one core, start-up excluded
CHUNK = 1_000_000


# ----------------------------------------------------------------------------- setup
def ensure_model(data_dir: Path, quick: bool) -> Path:
    """The Adult baseline MLP (trained once, then reused)."""
    out = data_dir / ("predict-adult-mlp-quick" if quick else "predict-adult-mlp")
    if (out / "fairfix.json").is_file():
        return out
    cmd = [*FAIRFIX, "train", "adult:train", "--label", "income", "--group", "sex",
           "--group", "race", "--out", str(out), "--force", "--format", "json"]
    if quick:
        cmd += ["--epochs", "2"]
    print(f"training {out.name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    # One torch thread: training a small MLP is not what is measured, and on a busy machine
    # the default thread pool spends most of its time spin-waiting.
    env = {**child_env(), "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    print(f"  trained in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


def make_input(data_dir: Path, rows: int, seed: int = 0) -> Path:
    """Adult test rows resampled with replacement to ``rows`` rows, with an int64 ``id``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = data_dir / f"adult_test_resampled_{rows}_s{seed}_v{GEN_VERSION}.parquet"
    if path.is_file():
        return path
    from fairfix.datasets import load_adult

    base = pa.Table.from_pandas(load_adult("test"), preserve_index=False)
    rng = np.random.default_rng(seed)
    print(f"generating {path.name} ...", file=sys.stderr, flush=True)
    tmp = path.with_suffix(".parquet.tmp")
    writer = None
    try:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            chunk = base.take(pa.array(rng.integers(0, base.num_rows, n)))
            chunk = chunk.add_column(0, "id", pa.array(np.arange(start, start + n, dtype=np.int64)))
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), chunk.schema)
            writer.write_table(chunk, row_group_size=CHUNK)
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------------------- measuring
def predict_cmd(model: Path, src: Path, out: Path, *extra: str) -> list[str]:
    return [*FAIRFIX, "predict", str(src), "--model", str(model), "--id", "id",
            "--output", str(out), "--force", *extra]


ONE_CORE = True  # set by --cores


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FAIRFIX_DEBUG", None)
    env["FAIRFIX_NO_PROGRESS"] = "1"
    if ONE_CORE:
        env["OMP_NUM_THREADS"] = "1"
    return env


def _pin() -> None:
    """Run the child on one CPU (the last one this process may use)."""
    if ONE_CORE and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), preexec_fn=_pin)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return dt


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``cmd``, measured by a wrapper process."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "t0 = time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "dt = time.perf_counter() - t0\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc, dt)\n"
    )
    r = subprocess.run([PY, "-c", wrapper, *cmd], capture_output=True, text=True, env=child_env(),
                       preexec_fn=_pin)
    kb, rc, dt = r.stdout.split()
    if int(rc) != 0:
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}\n{r.stderr}")
    return int(kb) / 1024.0, float(dt)  # Linux: ru_maxrss in KiB


def rows_of(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


STAGE_CODE = r"""
import json, sys, time
import pandas, pyarrow.parquet  # imported before the clock starts: start-up, not per-row work
import fairfix.models.runner as runner
import fairfix.predict as fp
from fairfix.models import load_model

model = load_model(sys.argv[1])
spent = {"arrow -> pandas": 0.0, "encode": 0.0, "forward": 0.0, "output columns": 0.0, "write": 0.0}

def timing(name, fn):
    def wrapped(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] += time.perf_counter() - t
    return wrapped

runner.frame_of = timing("arrow -> pandas", runner.frame_of)
model.encode = timing("encode", model.encode)
model.forward = timing("forward", model.forward)
fp.prediction_columns = timing("output columns", fp.prediction_columns)
fp._Writer.write = timing("write", fp._Writer.write)
t0 = time.perf_counter()
fp.predict(sys.argv[2], model, sys.argv[3], id_column="id", force=True)
total = time.perf_counter() - t0
spent["read + rest"] = total - sum(spent.values())
print(json.dumps({"total": total, "stages": spent}))
"""


def stages(model: Path, src: Path, out: Path) -> dict:
    """Seconds per stage of one in-process predict (P3)."""
    r = subprocess.run([PY, "-c", STAGE_CODE, str(model), str(src), str(out)], capture_output=True, text=True,
                       env=child_env(), preexec_fn=_pin)
    if r.returncode != 0:
        raise SystemExit(f"stage timing failed: {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, quick model (smoke test)")
    ap.add_argument("--runs", type=int, default=3, help="runs for the throughput median")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "bench-data")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    ap.add_argument("--cores", type=int, choices=(0, 1), default=1,
                    help="1: each fairfix predict on one pinned core with OMP_NUM_THREADS=1 (default); 0: as is")
    args = ap.parse_args()
    global ONE_CORE
    ONE_CORE = args.cores == 1
    args.data_dir.mkdir(parents=True, exist_ok=True)
    n_speed, n_rss = (20_000, 200_000) if args.quick else (1_000_000, 10_000_000)

    model = ensure_model(args.data_dir, args.quick)
    tiny = make_input(args.data_dir, 10)
    speed_in = make_input(args.data_dir, n_speed)
    rss_in = make_input(args.data_dir, n_rss)
    work = Path(tempfile.mkdtemp(prefix="predict-bench-", dir=args.data_dir))
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    res: dict = {"machine": machine, "quick": args.quick, "model": str(model), "one_core": ONE_CORE}
    try:
        out = work / "out.parquet"
        timed(predict_cmd(model, tiny, out))  # warm the page cache / imports
        startup = [timed(predict_cmd(model, tiny, out)) for _ in range(args.runs)]
        res["startup_s"] = statistics.median(startup)
        times = [timed(predict_cmd(model, speed_in, out)) for _ in range(args.runs)]
        assert rows_of(out) == n_speed
        res["speed_rows"] = n_speed
        res["speed_times_s"] = times
        res["speed_median_s"] = statistics.median(times)
        res["rows_per_s"] = n_speed / res["speed_median_s"]
        net = res["speed_median_s"] - res["startup_s"]
        # Start-up is noisy on a busy machine: a net figure only when the work clearly dominates.
        res["rows_per_s_net"] = n_speed / net if net > 0.25 * res["startup_s"] else None
        res["stages"] = stages(model, speed_in, out)
        csv_out = work / "out.csv"
        res["speed_csv_out_s"] = timed(predict_cmd(model, speed_in, csv_out))
        rss_mb, rss_wall = peak_rss(predict_cmd(model, rss_in, out))
        assert rows_of(out) == n_rss
        res["rss_rows"] = n_rss
        res["rss_peak_mb"] = rss_mb
        res["rss_wall_s"] = rss_wall
        res["rss_rows_per_s"] = n_rss / rss_wall
        res["rss_target_met"] = rss_mb < RSS_TARGET_MB
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        ("start-up (10 rows, median)", f"{res['startup_s']:.2f} s", ""),
        (f"predict {n_speed:,} rows -> Parquet (median of {args.runs})",
         f"{res['speed_median_s']:.2f} s  [{', '.join(f'{t:.2f}' for t in times)}]", ""),
        ("  throughput (wall, incl. start-up)", f"{res['rows_per_s']:,.0f} rows/s", ""),
        ("  throughput (less start-up)",
         f"{res['rows_per_s_net']:,.0f} rows/s" if res["rows_per_s_net"]
         else "n/a (start-up dominates)", ">= 200,000 rows/s: "
         + ("PASS" if (res["rows_per_s_net"] or 0) >= RATE_TARGET else "FAIL")),
        (f"predict {n_speed:,} rows -> CSV (1 run)", f"{res['speed_csv_out_s']:.2f} s", ""),
        (f"predict {n_rss:,} rows -> Parquet: peak RSS", f"{res['rss_peak_mb']:.0f} MiB",
         f"< {RSS_TARGET_MB:.0f} MiB: {'PASS' if res['rss_target_met'] else 'FAIL'}"),
        ("  wall time / throughput",
         f"{res['rss_wall_s']:.1f} s / {res['rss_rows_per_s']:,.0f} rows/s", ""),
    ]
    st = res["stages"]
    rows.append((f"where the time goes ({n_speed:,} rows, in-process)", f"{st['total']:.2f} s", ""))
    for name, sec in sorted(st["stages"].items(), key=lambda kv: -kv[1]):
        rows.append((f"  {name}", f"{sec:.2f} s ({100 * sec / st['total']:.0f}%)", ""))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    cores = "one pinned core, OMP_NUM_THREADS=1" if ONE_CORE else "cores as the machine gives them"
    print(f"fairfix predict benchmark ({'quick' if args.quick else 'full'}; {res['machine']}; {cores})")
    print(f"model: {model}")
    print(f"{'measure':<{w0}}  {'figure':<{w1}}  target")
    print(f"{'-' * w0}  {'-' * w1}  ------")
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")
    res["rate_target_met"] = (res["rows_per_s_net"] or 0) >= RATE_TARGET
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 1 if args.strict and not (res["rss_target_met"] and res["rate_target_met"]) else 0


if __name__ == "__main__":
    sys.exit(main())
