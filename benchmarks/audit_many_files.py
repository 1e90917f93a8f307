"""``fairfix audit DIR`` over many Parquet files vs DuckDB's bare GROUP BY over the same files.

Issue 12's full size is 1e8 rows in 100 files (``--rows 100000000``); the default
here is smaller so that the whole run takes a few minutes on a 2-core machine.

    .venv/bin/python benchmarks/audit_many_files.py --rows 20000000 --files 100 --runs 5

Data: the rows of benchmarks/audit_speed.py (columns id, age, sex, race, score,
label, pred; 10 intersectional groups; plain string columns), split into
``--files`` Parquet files under ``bench-data/many_<rows>_<files>/`` (cached).

Measured, interleaved round by round (each round runs every command once, in a
rotating order), after one warm-up round; the figures are medians:

- ``fairfix audit DIR --engine arrow`` and ``--engine duckdb`` (and ``--score``
  with the default engine), whole process, as the console script;
- DuckDB's bare ``SELECT sex, race, label, pred, count(*) ... GROUP BY ALL`` over
  the same files: as a ``python -c`` process (import included) and in-process
  (a warm connection, the query alone);
- peak RSS of each child (a fresh wrapper reads ``RUSAGE_CHILDREN``).

The script also checks that both engines and DuckDB's own counts agree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_speed import (  # noqa: E402  (the same rows and child-process helpers)
    CHILD_ENV,
    PY,
    ROOT,
    Child,
    _chunk,
    fairfix_exe,
    peak_rss_mb,
    use_bytecode_cache,
)

GEN_VERSION = 1
AUDIT = ["--label", "label", "--pred", "pred", "--group", "sex", "--group", "race", "--format", "json"]
SQL = "SELECT sex, race, label, pred, count(*) AS n FROM read_parquet({files}) GROUP BY ALL"


def make_files(data_dir: Path, rows: int, files: int, seed: int = 0) -> Path:
    """Write (once) ``files`` Parquet files holding ``rows`` rows in all; return their folder."""
    import pyarrow.parquet as pq

    folder = data_dir / f"many_{rows}_{files}_s{seed}_v{GEN_VERSION}"
    if (folder / "_SUCCESS").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per = -(-rows // files)
    for i in range(files):
        start = i * per
        n = max(0, min(per, rows - start))
        tbl = _chunk(np.random.default_rng([seed, i]), start, n)
        pq.write_table(tbl, folder / f"part-{i:05d}.parquet", row_group_size=1 << 20)
    (folder / "_SUCCESS").write_text("")
    print(f"  generated {files} files, {rows:,} rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return folder


def duckdb_child(folder: Path) -> list[str]:
    code = (
        "import sys, duckdb\n"
        f"duckdb.sql({SQL!r}.format(files=repr(sys.argv[1] + '/*.parquet'))).fetchall()\n"
    )
    return [PY, "-c", code, str(folder)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=float, default=2e7, help="rows in all (issue 12's full size: 1e8)")
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5, help="timed rounds (medians reported)")
    ap.add_argument("--data-dir", type=Path, default=ROOT / "bench-data")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    rows = int(args.rows)
    use_bytecode_cache(args.data_dir)
    folder = make_files(args.data_dir, rows, args.files)
    ff = fairfix_exe()
    commands = {
        "fairfix audit DIR --engine arrow": [*ff, "audit", str(folder), *AUDIT, "--engine", "arrow"],
        "fairfix audit DIR --engine duckdb": [*ff, "audit", str(folder), *AUDIT, "--engine", "duckdb"],
        "fairfix audit DIR (auto) --score": [*ff, "audit", str(folder), *AUDIT[:2], "--score", "score",
                                             *AUDIT[4:]],
        "duckdb GROUP BY, python -c process": duckdb_child(folder),
    }

    # Agreement: per-group n and accuracy from both engines, and DuckDB's own counts.
    import duckdb

    outs = {}
    for key in ("fairfix audit DIR --engine arrow", "fairfix audit DIR --engine duckdb"):
        proc = subprocess.run(commands[key], capture_output=True, text=True, env=CHILD_ENV, cwd=ROOT, check=True)
        report = json.loads(proc.stdout)
        report["settings"].pop("source")
        outs[key] = report
    same = outs["fairfix audit DIR --engine arrow"] == outs["fairfix audit DIR --engine duckdb"]
    con = duckdb.connect()
    query = SQL.format(files=repr(str(folder / "*.parquet")))
    bare = con.sql(query).fetchall()
    by_group: dict[tuple[str, str], int] = {}
    for sex, race, _label, _pred, n in bare:
        by_group[(sex, race)] = by_group.get((sex, race), 0) + n
    arrow_report = outs["fairfix audit DIR --engine arrow"]
    ff_groups = {(g["group"]["sex"], g["group"]["race"]): g["n"] for g in arrow_report["groups"]}
    agree = same and ff_groups == by_group and sum(by_group.values()) == rows

    child = Child()
    times: dict[str, list[float]] = {k: [] for k in commands}
    times["duckdb GROUP BY, in-process (warm)"] = []
    keys = list(times)
    for r in range(args.runs + 1):  # round 0 is the warm-up
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            if k in commands:
                t = child(commands[k])
            else:
                t0 = time.perf_counter()
                con.sql(query).fetchall()
                t = time.perf_counter() - t0
            if r:
                times[k].append(t)
    rss = {k: peak_rss_mb(cmd) for k, cmd in commands.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    base_key = "duckdb GROUP BY, python -c process"
    # Paired: the median over rounds of each command's time over DuckDB's process in the same
    # round, the figure least moved by load that comes and goes on a shared machine.
    paired = {k: statistics.median(a / b for a, b in zip(times[k], times[base_key], strict=True)) for k in keys}
    base = med[base_key]
    base_in = med["duckdb GROUP BY, in-process (warm)"]

    load = os.getloadavg()[0]
    size_mb = sum(p.stat().st_size for p in folder.glob("*.parquet")) / 1e6
    print(f"\n{rows:,} rows in {args.files} Parquet files ({size_mb:.0f} MB), "
          f"{args.runs} rounds, medians; load average {load:.2f}; {os.cpu_count()} CPUs")
    print(f"agreement (both engines' JSON identical, group sizes = DuckDB's counts): {'yes' if agree else 'NO'}\n")
    print(f"| {'command':<40} | {'median s':>8} | {'runs s':<34} | {'x duckdb process':>16} | {'paired':>6} "
          f"| {'x duckdb in-process':>19} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 42}|{'-' * 9}:|{'-' * 36}|{'-' * 17}:|{'-' * 7}:|{'-' * 20}:|{'-' * 12}:|")
    for k in keys:
        runs = ", ".join(f"{t:.2f}" for t in times[k])
        r = f"{rss[k]:.0f}" if k in rss else ""
        print(f"| {k:<40} | {med[k]:8.3f} | {runs:<34} | {med[k] / base:16.2f} | {paired[k]:6.2f} "
              f"| {med[k] / base_in:19.2f} | {r:>11} |")
    print(f"\nrows/s, fairfix --engine duckdb: {rows / med['fairfix audit DIR --engine duckdb']:,.0f}; "
          f"--engine arrow: {rows / med['fairfix audit DIR --engine arrow']:,.0f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "files": args.files, "median_s": med, "runs_s": times,
                                         "paired_x_duckdb_process": paired, "peak_rss_mb": rss, "agree": agree,
                                         "load": load}, indent=2))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
