#!/usr/bin/env python
"""How fast is ``fairfix audit``?  Targets T1-T5 of the performance issue, side by side.

Usage::

    .venv/bin/python benchmarks/audit_speed.py            # the full run (~5 minutes)
    .venv/bin/python benchmarks/audit_speed.py --quick    # smoke test (seconds)

Every figure is a median over several runs, all measured in this one run of the
script so that ratios compare like with like on the same machine:

T1  ``fairfix audit`` (a subprocess, wall time, --bootstrap 1000) on a 2M-row
    Parquet file versus Fairlearn's ``MetricFrame`` on the same rows already
    loaded in memory (accuracy, TPR, FPR, selection rate; sensitive_features =
    two columns, 10 intersectional groups; only the construction is timed):
    fairfix must be >= 50x faster.  The two tools' per-group numbers are
    compared too (they must agree to 1e-9).
T2  ``fairfix audit`` on a 10M-row Parquet file within 2x of
    ``pyarrow.parquet.read_table(path, columns=[needed])`` in-process (after
    one warm-up read, which pays pyarrow.dataset's one-time imports); a
    ``python -c`` subprocess doing the same read is reported too.
T3  A 10M-row CSV audited with peak RSS < 500 MB (each child measured by its
    own wrapper process via ``getrusage(RUSAGE_CHILDREN)``).
T4  ``fairfix audit`` on a 10-row file in < 0.5 s, and neither torch, peft nor
    pandas imported on the audit path (``python -X importtime``).
T5  1,000 bootstrap resamples add < 1 s (``--bootstrap 0`` vs ``1000`` on the
    10M file, and ``fairfix.metrics.bootstrap`` timed on the counts directly).

Data are generated deterministically (seeded) and cached in ``bench-data/``
(git-ignored).  Figures are noisy when other processes compete for the CPUs:
the script prints the load average before and after.  It exits 0 whether or
not targets pass; ``--strict`` makes a failed target exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
GEN_VERSION = 1  # bump when the generator changes, so cached files are rebuilt

SEX = ["Female", "Male"]
RACE = ["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"]
NEEDED = ["label", "pred", "sex", "race"]
AUDIT_ARGS = ["--label", "label", "--pred", "pred", "--group", "sex", "--group", "race"]
FORBIDDEN_IMPORTS = ("torch", "peft", "pandas")
CHILD_ENV = {**os.environ, "FAIRFIX_NO_PROGRESS": "1"}  # see use_bytecode_cache()


# ----------------------------------------------------------------------------- data
def _chunk(rng: np.random.Generator, start: int, n: int):
    """One chunk of the synthetic predictions file (a pyarrow Table)."""
    import pyarrow as pa

    sex = rng.choice(2, size=n, p=[0.33, 0.67]).astype(np.int8)
    race = rng.choice(5, size=n, p=[0.85, 0.10, 0.03, 0.01, 0.01]).astype(np.int8)
    g = sex * 5 + race  # 10 intersectional groups
    prevalence = np.linspace(0.1, 0.35, 10)[g]
    label = (rng.random(n) < prevalence).astype(np.int64)
    noise = np.linspace(0.18, 0.32, 10)[g]
    score = np.clip(0.5 * label + 0.25 + rng.normal(0.0, noise, n), 0.0, 1.0)
    pred = (score >= 0.5).astype(np.int64)
    return pa.table(
        {
            "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
            "age": pa.array(rng.integers(17, 90, n, dtype=np.int64)),
            # plain (not dictionary-typed) strings, as most writers store them
            "sex": pa.array(SEX, pa.string()).take(pa.array(sex)),
            "race": pa.array(RACE, pa.string()).take(pa.array(race)),
            "score": pa.array(np.round(score, 6)),
            "label": pa.array(label),
            "pred": pa.array(pred),
        }
    )


def make_data(data_dir: Path, rows: int, fmt: str, seed: int = 0) -> Path:
    """Write (once) a deterministic predictions file of ``rows`` rows; return its path."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"preds_{rows}_s{seed}_v{GEN_VERSION}.{fmt}"
    if path.exists():
        return path
    tmp = path.with_name(path.name + ".tmp")
    chunk_rows = 1 << 20  # also the Parquet row-group size
    writer = None
    t0 = time.perf_counter()
    try:
        for i, start in enumerate(range(0, rows, chunk_rows)):
            tbl = _chunk(np.random.default_rng([seed, i]), start, min(chunk_rows, rows - start))
            if writer is None:
                writer = (pq.ParquetWriter(tmp, tbl.schema) if fmt == "parquet"
                          else pcsv.CSVWriter(tmp, tbl.schema))
            writer.write_table(tbl)
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, path)
    print(f"  generated {path.name} ({rows:,} rows, {path.stat().st_size / 1e6:.0f} MB) "
          f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


def make_tiny(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    tiny = data_dir / "preds_10.csv"
    if not tiny.exists():
        rows = ["id,sex,race,label,pred"]
        for i in range(10):
            rows.append(f"{i},{SEX[i % 2]},{RACE[i % 5]},{i % 3 % 2},{(i + 1) % 3 % 2}")
        tiny.write_text("\n".join(rows) + "\n")
    return tiny


# ----------------------------------------------------------------------------- helpers
def use_bytecode_cache(data_dir: Path) -> bool:
    """Let child processes cache compiled bytecode, as Python does by default.

    Some environments (this project's sandboxes among them) set
    PYTHONDONTWRITEBYTECODE=1, which makes every process compile fairfix's
    modules from source again (~0.05-0.1 s per start).  Users' installs cache
    bytecode, so the children do too, in data_dir/pycache (PYTHONPYCACHEPREFIX)
    to keep the source tree clean.  Returns whether the variable was set.
    """
    was_set = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    CHILD_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    CHILD_ENV["PYTHONPYCACHEPREFIX"] = str((data_dir / "pycache").resolve())
    return was_set


def fairfix_exe() -> list[str]:
    """The ``fairfix`` console script next to this Python (as users run it), else ``-m fairfix``."""
    script = Path(PY).parent / "fairfix"
    return [str(script)] if script.exists() else [PY, "-m", "fairfix"]


def fairfix_cmd(path: Path, *extra: str) -> list[str]:
    return [*fairfix_exe(), "audit", str(path), *AUDIT_ARGS, "--format", "json", *extra]


class Child:
    """Run subprocesses; remember wall and CPU (user + sys) time of each."""

    def __init__(self) -> None:
        self.cpu: list[float] = []

    def __call__(self, cmd: list[str]) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=CHILD_ENV,
                              cwd=ROOT)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            tail = proc.stderr.decode()[-2000:]
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {tail}")
        self.cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        return wall


def median_time(fn: Callable[[], float], runs: int, warmup: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = [fn() for _ in range(runs)]
    return statistics.median(times), times


def timed_child(cmd: list[str], runs: int, warmup: int) -> tuple[float, list[float], float]:
    """Median wall time, all wall times and median CPU time of ``cmd``."""
    child = Child()
    wall, walls = median_time(lambda: child(cmd), runs, warmup)
    return wall, walls, statistics.median(child.cpu[warmup:])


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak RSS (MB) of ``cmd``, measured by a fresh wrapper so that no other child counts."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)\n"
    )
    out = subprocess.run([PY, "-c", wrapper, *cmd], capture_output=True, text=True, env=CHILD_ENV,
                         cwd=ROOT, check=True)
    kib, rc = out.stdout.split()
    if rc != "0":
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}: {out.stderr[-2000:]}")
    return int(kib) / 1024.0  # Linux reports ru_maxrss in KiB


def audit_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=CHILD_ENV, cwd=ROOT, check=True)
    return json.loads(out.stdout)


# ----------------------------------------------------------------------------- targets
def t1(path: Path, args: argparse.Namespace, results: dict) -> None:
    ff, ff_all, ff_cpu = timed_child(fairfix_cmd(path), args.runs, args.warmup)
    try:
        from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate
        from sklearn.metrics import accuracy_score, recall_score
    except ImportError as exc:
        results["T1"] = {"skipped": f"fairlearn is not installed ({exc})", "fairfix_audit_s": ff}
        return
    import warnings

    import pyarrow.parquet as pq

    # The same rows, already in memory: int labels/predictions as numpy arrays and
    # the two sensitive columns as a pandas DataFrame (pandas' default string dtype).
    df = pq.read_table(path, columns=NEEDED).to_pandas()
    y_true = df["label"].to_numpy()
    y_pred = df["pred"].to_numpy()
    sensitive = df[["sex", "race"]]
    metrics = {"accuracy": accuracy_score, "tpr": recall_score, "fpr": false_positive_rate,
               "selection_rate": selection_rate}
    frames = []

    def fairlearn_once() -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            frames.append(MetricFrame(metrics=metrics, y_true=y_true, y_pred=y_pred,
                                      sensitive_features=sensitive))
            return time.perf_counter() - t0

    fl, fl_all = median_time(fairlearn_once, args.fairlearn_runs, 0)
    # Both tools must have computed the same numbers.
    report = audit_json(fairfix_cmd(path, "--bootstrap", "0"))
    by_group = frames[-1].by_group
    worst = 0.0
    for g in report["groups"]:
        row = by_group.loc[(g["group"]["sex"], g["group"]["race"])]
        for m in metrics:
            ours = g[m]
            if ours is None:  # undefined (e.g. no positives): null here, 0 or NaN in sklearn
                continue
            worst = max(worst, abs(ours - float(row[m])))
    results["T1"] = {
        "rows": report["n"], "groups": len(report["groups"]),
        "fairfix_audit_s": ff, "fairfix_runs_s": ff_all, "fairfix_cpu_s": ff_cpu,
        "fairlearn_metricframe_s": fl, "fairlearn_runs_s": fl_all,
        "speedup": fl / ff, "max_abs_diff_vs_fairlearn": worst,
        "target": ">= 50x", "pass": fl / ff >= 50 and worst < 1e-9,
    }


def t2_t5(path: Path, args: argparse.Namespace, results: dict) -> None:
    import pyarrow.parquet as pq

    def read_in_process() -> float:
        t0 = time.perf_counter()
        tbl = pq.read_table(path, columns=NEEDED)
        dt = time.perf_counter() - t0
        del tbl
        return dt

    # One warm-up read always: the first read_table imports pyarrow.dataset (and pandas).
    pa_in, pa_in_all = median_time(read_in_process, args.runs, 1)
    code = f"import pyarrow.parquet as pq; pq.read_table({str(path)!r}, columns={NEEDED!r})"
    pa_sub, _, _ = timed_child([PY, "-c", code], args.runs, args.warmup)
    ff, ff_all, ff_cpu = timed_child(fairfix_cmd(path), args.runs, args.warmup)
    ff0, ff0_all, _ = timed_child(fairfix_cmd(path, "--bootstrap", "0"), args.runs, 0)
    rows = pq.ParquetFile(path).metadata.num_rows
    results["T2"] = {
        "rows": rows,
        "fairfix_audit_s": ff, "fairfix_runs_s": ff_all, "fairfix_cpu_s": ff_cpu,
        "pyarrow_read_in_process_s": pa_in, "pyarrow_read_in_process_runs_s": pa_in_all,
        "pyarrow_read_subprocess_s": pa_sub,
        "ratio_vs_in_process": ff / pa_in, "ratio_vs_subprocess": ff / pa_sub,
        "target": "<= 2x", "pass": ff / pa_in <= 2.0,
    }

    # T5: the same file without resamples, and the bootstrap on the counts directly.
    from fairfix._audit import audit
    from fairfix.metrics import bootstrap as boot
    from fairfix.report.audit import build_report

    counts = audit(path, label="label", pred="pred", group=["sex", "race"], bootstrap=0).counts
    rng = np.random.default_rng(0)

    def resample_once() -> float:
        t0 = time.perf_counter()
        boot.resample_counts(counts.counts, 1000, rng)
        return time.perf_counter() - t0

    def report_cost(n: int) -> float:
        t0 = time.perf_counter()
        build_report(counts, label="label", positive=1, positive_source=None, n_bootstrap=n)
        return time.perf_counter() - t0

    resample, _ = median_time(resample_once, 7, 1)
    rep0, _ = median_time(lambda: report_cost(0), 7, 1)
    rep1000, _ = median_time(lambda: report_cost(1000), 7, 1)
    results["T5"] = {
        "rows": rows,
        "audit_bootstrap_0_s": ff0, "audit_bootstrap_0_runs_s": ff0_all,
        "audit_bootstrap_1000_s": ff, "added_by_bootstrap_s": ff - ff0,
        "resample_counts_1000_s": resample,
        "build_report_bootstrap_1000_minus_0_s": rep1000 - rep0,
        "target": "< 1 s", "pass": ff - ff0 < 1.0 and rep1000 - rep0 < 1.0,
    }


def t3(path: Path, args: argparse.Namespace, results: dict) -> None:
    runs = max(1, min(args.runs, 3))
    rss = [peak_rss_mb(fairfix_cmd(path)) for _ in range(runs)]
    wall, wall_all, cpu = timed_child(fairfix_cmd(path), runs, 0)
    results["T3"] = {
        "rows": args.rows_large, "file_mb": path.stat().st_size / 1e6,
        "peak_rss_mb": max(rss), "peak_rss_runs_mb": rss,
        "fairfix_audit_s": wall, "fairfix_runs_s": wall_all, "fairfix_cpu_s": cpu,
        "target": "< 500 MB", "pass": max(rss) < 500,
    }


def t4(tiny: Path, args: argparse.Namespace, results: dict) -> None:
    subprocess.run(fairfix_cmd(tiny), capture_output=True, env=CHILD_ENV, cwd=ROOT)  # fills caches
    wall, wall_all, cpu = timed_child(fairfix_cmd(tiny), args.t4_runs, args.warmup)
    no_cache = None
    if args.bytecode_cache:  # for comparison: every module compiled from source at each start
        saved = dict(CHILD_ENV)
        CHILD_ENV.pop("PYTHONPYCACHEPREFIX", None)
        CHILD_ENV["PYTHONDONTWRITEBYTECODE"] = "1"
        try:
            no_cache, _, _ = timed_child(fairfix_cmd(tiny), args.t4_runs, 0)
        finally:
            CHILD_ENV.clear()
            CHILD_ENV.update(saved)
    cmd = [PY, "-X", "importtime", "-m", "fairfix", "audit", str(tiny), *AUDIT_ARGS,
           "--format", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=CHILD_ENV, cwd=ROOT, check=True)
    imports = []  # (cumulative microseconds, module name indented by nesting depth)
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cum_us, name = line[len("import time:"):].split("|")
        imports.append((int(cum_us), name[1:].rstrip()))
    names = {n.strip() for _, n in imports}
    forbidden = sorted({n.split(".")[0] for n in names if n.split(".")[0] in FORBIDDEN_IMPORTS})
    top_level = sorted(((us, n) for us, n in imports if not n.startswith(" ")), reverse=True)
    results["T4"] = {
        "fairfix_audit_s": wall, "fairfix_runs_s": wall_all, "fairfix_cpu_s": cpu,
        "fairfix_audit_without_bytecode_cache_s": no_cache,
        "import_total_s": sum(us for us, _ in top_level) / 1e6,
        "top_imports": [(n, us / 1e6) for us, n in top_level[:8]],
        "forbidden_imported": forbidden,
        "target": "< 0.5 s, no torch/peft/pandas", "pass": wall < 0.5 and not forbidden,
    }


# ----------------------------------------------------------------------------- report
def print_table(results: dict, args: argparse.Namespace) -> bool:
    lines: list[str] = []
    ok = True

    def row(target: str, name: str, fig: str, verdict: str = "") -> None:
        lines.append(f"{target:<6} {name:<60} {fig:>16}  {verdict}")

    def verdict(key: str) -> str:
        nonlocal ok
        if "pass" not in results.get(key, {}):
            return "skipped"
        ok &= bool(results[key]["pass"])
        return "PASS" if results[key]["pass"] else "FAIL"

    def s(x: float) -> str:
        return f"{x:.3f} s"

    rule = "-" * 100
    lines += [
        "",
        f"fairfix audit speed: {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"{'QUICK, ' if args.quick else ''}T1 {args.rows_t1:,} rows, "
        f"T2/T3/T5 {args.rows_large:,} rows; "
        f"medians of {args.runs} fairfix / {args.fairlearn_runs} fairlearn run(s)",
        f"load average before/after: {args.load_before:.2f} / {os.getloadavg()[0]:.2f} "
        "(processes competing for the CPUs inflate every figure)",
        "child processes: "
        + (f"Python's bytecode cache in {args.data_dir.name}/pycache"
           + (" (this environment sets PYTHONDONTWRITEBYTECODE=1)" if args.pyc_env_was_set else "")
           if args.bytecode_cache else "the environment as it is (--no-bytecode-cache)"),
        rule, f"{'target':<6} {'measure':<60} {'figure':>16}  result", rule,
    ]
    if "T1" in results:
        r = results["T1"]
        if "skipped" in r:
            row("T1", f"fairlearn comparison: {r['skipped']}", "-", verdict("T1"))
        else:
            row("T1", f"fairlearn MetricFrame, in-process ({r['rows']:,} rows, "
                f"{r['groups']} groups)",
                s(r["fairlearn_metricframe_s"]))
            row("", "fairfix audit, whole process, --bootstrap 1000", s(r["fairfix_audit_s"]))
            row("", "max |fairfix - fairlearn| over per-group metrics",
                f"{r['max_abs_diff_vs_fairlearn']:.1e}")
            row("", "speed-up (target >= 50x)", f"{r['speedup']:.0f}x", verdict("T1"))
    if "T2" in results:
        r = results["T2"]
        row("T2", f"pyarrow read_table(4 needed columns), in-process ({r['rows']:,} rows)",
            s(r["pyarrow_read_in_process_s"]))
        row("", "pyarrow read_table, python -c subprocess", s(r["pyarrow_read_subprocess_s"]))
        row("", "fairfix audit, whole process, --bootstrap 1000", s(r["fairfix_audit_s"]))
        row("", "  its CPU time (user + sys)", s(r["fairfix_cpu_s"]))
        row("", "fairfix / pyarrow subprocess", f"{r['ratio_vs_subprocess']:.2f}x")
        row("", "fairfix / pyarrow in-process (target <= 2x)", f"{r['ratio_vs_in_process']:.2f}x",
            verdict("T2"))
    if "T3" in results:
        r = results["T3"]
        row("T3", f"fairfix audit of a {r['file_mb']:.0f} MB CSV ({r['rows']:,} rows), wall",
            s(r["fairfix_audit_s"]))
        row("", "peak RSS of the process (target < 500 MB)", f"{r['peak_rss_mb']:.0f} MB",
            verdict("T3"))
    if "T4" in results:
        r = results["T4"]
        row("T4", "imports on the audit path, cumulative (-X importtime)", s(r["import_total_s"]))
        for name, sec in r["top_imports"]:
            row("", f"  import {name}", s(sec))
        row("", "torch / peft / pandas imported", ", ".join(r["forbidden_imported"]) or "none")
        row("", "fairfix audit of a 10-row CSV: CPU time (user + sys)", s(r["fairfix_cpu_s"]))
        if r.get("fairfix_audit_without_bytecode_cache_s") is not None:
            row("", "  the same, wall, without bytecode cache (not the target)",
                s(r["fairfix_audit_without_bytecode_cache_s"]))
        row("", "fairfix audit of a 10-row CSV, wall (target < 0.5 s)", s(r["fairfix_audit_s"]),
            verdict("T4"))
    if "T5" in results:
        r = results["T5"]
        row("T5", f"fairfix audit --bootstrap 0 ({r['rows']:,} rows)", s(r["audit_bootstrap_0_s"]))
        row("", "fairfix audit --bootstrap 1000", s(r["audit_bootstrap_1000_s"]))
        row("", "bootstrap.resample_counts(counts, 1000), direct", s(r["resample_counts_1000_s"]))
        row("", "build_report: bootstrap 1000 minus 0, direct",
            s(r["build_report_bootstrap_1000_minus_0_s"]))
        row("", "added by 1000 resamples, whole process (target < 1 s)",
            s(r["added_by_bootstrap_s"]),
            verdict("T5"))
    lines += [rule, "ALL TARGETS PASS" if ok else "SOME TARGETS FAILED"]
    print("\n".join(lines), flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark fairfix audit against targets T1-T5.")
    ap.add_argument("--quick", action="store_true", help="few rows, one run each: a smoke test")
    ap.add_argument("--rows-t1", type=int, help="rows of the T1 file (default 2,000,000)")
    ap.add_argument("--rows-large", type=int,
                    help="rows of the T2/T3/T5 files (default 10,000,000)")
    ap.add_argument("--runs", type=int, help="fairfix runs per median (default 5)")
    ap.add_argument("--fairlearn-runs", type=int, help="fairlearn runs per median (default 3)")
    ap.add_argument("--only", default="T1,T2,T3,T4,T5", help="comma-separated targets to run")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "bench-data")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    ap.add_argument("--no-bytecode-cache", dest="bytecode_cache", action="store_false",
                    help="run children with the environment as it is (no PYTHONPYCACHEPREFIX)")
    args = ap.parse_args(argv)
    quick = args.quick
    args.rows_t1 = args.rows_t1 or (5_000 if quick else 2_000_000)
    args.rows_large = args.rows_large or (20_000 if quick else 10_000_000)
    args.runs = args.runs or (1 if quick else 5)
    args.fairlearn_runs = args.fairlearn_runs or (1 if quick else 3)
    args.warmup = 0 if quick else 1
    args.t4_runs = args.runs if quick else max(args.runs, 7)
    only = {t.strip().upper() for t in args.only.split(",")}
    args.load_before = os.getloadavg()[0]
    if args.load_before > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {args.load_before:.2f}: other processes are busy, "
              "figures will be noisy", file=sys.stderr)

    args.pyc_env_was_set = use_bytecode_cache(args.data_dir) if args.bytecode_cache else False
    results: dict = {}
    if "T4" in only:
        print("T4: a 10-row file, imports ...", file=sys.stderr)
        t4(make_tiny(args.data_dir), args, results)
    if "T1" in only:
        print("T1: fairfix vs fairlearn ...", file=sys.stderr)
        t1(make_data(args.data_dir, args.rows_t1, "parquet"), args, results)
    if only & {"T2", "T5"}:
        print("T2/T5: the large Parquet file ...", file=sys.stderr)
        t2_t5(make_data(args.data_dir, args.rows_large, "parquet"), args, results)
    if "T3" in only:
        print("T3: the large CSV file ...", file=sys.stderr)
        t3(make_data(args.data_dir, args.rows_large, "csv"), args, results)
    ok = print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2) + "\n")
    return 1 if (args.strict and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
