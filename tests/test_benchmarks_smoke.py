"""Benchmark scripts in smoke mode: each runs, checks what it checks and prints its table (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "audit_speed.py"
# A few seconds on an idle 2-core machine; skip rather than fail on a busy one.
TIMEOUT_S = 90


def test_audit_speed_quick_prints_the_table(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--quick", "--rows-t1", "2000", "--rows-large", "5000",
           "--data-dir", str(tmp_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"benchmarks/audit_speed.py --quick took over {TIMEOUT_S} s on this machine")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "target" in out and "figure" in out
    for target in ("T1", "T2", "T3", "T4", "T5"):
        assert any(line.startswith(target) for line in out.splitlines()), (target, out)
    assert "ALL TARGETS PASS" in out or "SOME TARGETS FAILED" in out
    assert ("PASS" in out) or ("FAIL" in out)


def test_audit_many_files_tiny_prints_the_table(tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "audit_many_files.py"), "--rows", "20000", "--files", "4",
           "--runs", "1", "--data-dir", str(tmp_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"benchmarks/audit_many_files.py took over {TIMEOUT_S} s on this machine")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "agreement (both engines' JSON identical, group sizes = DuckDB's counts): yes" in proc.stdout
    for row in ("--engine arrow", "--engine duckdb", "duckdb GROUP BY, python -c process"):
        assert row in proc.stdout


@pytest.mark.parametrize("script", ["fairnet.py", "peers.py"])
def test_fairnet_benchmark_modules_import(script: str) -> None:
    """The split FairNet benchmark (protocol, tasks, peers, report) imports and parses its options."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True,
                          text=True, timeout=TIMEOUT_S, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--quick" in proc.stdout and "--from-json" in proc.stdout


def test_trust_imports_the_protocol() -> None:
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import trust, fairnet_protocol, fairnet_tasks; "
            "assert callable(fairnet_tasks.adult_task) and callable(fairnet_protocol.seed_split)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]

def test_multi_attribute_quick_prints_the_table(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "multi_attribute.py"), "--quick", "--seeds", "1",
           "--datasets", "Adult", "--json", str(tmp_path / "runs.json")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"benchmarks/multi_attribute.py --quick took over {TIMEOUT_S} s on this machine")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "### Adult (sex then race)" in proc.stdout
    for row in ("| ERM |", "| fairfix (sex only) |", "| fairfix (sex then race) |"):
        assert row in proc.stdout
    assert "WGA sex x race" in proc.stdout


def _quick_on_one_thread(script: str, *args: str) -> str:
    """``benchmarks/SCRIPT --quick ARGS`` with OMP_NUM_THREADS=1: its stdout (skip when over the time limit)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        pytest.skip(f"benchmarks/{script} --quick took over {TIMEOUT_S} s on this machine")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_stacked_latency_quick_checks_bit_identity_and_prints_the_table(tmp_path: Path) -> None:
    out = _quick_on_one_thread("stacked_latency.py", "--data-dir", str(tmp_path))
    assert "(bit-identical to the base: checked)" in out
    for row in ("base", "one adapter, gated", "stacked, one stage", "stacked, two stages"):
        assert any(line.startswith(row) for line in out.splitlines()), (row, out)


def test_export_latency_quick_prints_the_table() -> None:
    out = _quick_on_one_thread("export_latency.py", "--kinds", "tabular")
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("0 |"))
    diff = float(line.rsplit("|", 1)[1])
    assert diff < 1e-5, line  # the merged export's scores are the bundle's
    assert "merged x base" in out


def test_text_shortcut_passes_the_label_regime_and_tables_saved_runs(tmp_path: Path) -> None:
    """benchmarks/text_shortcut.py: --labels full|0.1|none (for the scarce-label methods) and its tables."""
    script = str(ROOT / "benchmarks" / "text_shortcut.py")
    proc = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=TIMEOUT_S,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "{full,0.1,none}" in proc.stdout
    cells = {"with,0": 0.0, "with,1": 1.0, "without,0": 1.0, "without,1": 0.5}
    runs = [{"seed": 0, "method": "ERM", "accuracy": 0.625, "wga": 0.0, "cells": cells, "train_dist_accuracy": 0.925,
             "rows": 1000, "seconds": 1.0},
            {"seed": 0, "method": "fairfix (full)", "accuracy": 0.75, "wga": 0.25, "enabled": True,
             "cells": {**cells, "with,0": 0.25}, "train_dist_accuracy": 0.93, "rows": 1000, "seconds": 2.0,
             "evidence": {"rows": 1000, "worst_cell_rows": 50}, "chosen": {"steps": 60, "strength": 1.0}}]
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    proc = subprocess.run([sys.executable, script, "--from-json", str(tmp_path / "runs.json")], capture_output=True,
                          text=True, timeout=TIMEOUT_S, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| fairfix (full) | 75.0 ± 0.0 | 25.0 ± 0.0 | +25.0 | 93.0 ± 0.0 | 1/1 | 1/1 |" in proc.stdout
    assert ("| 0 | fairfix (full) | 75.0 | 25.0 | 25.0 / 100.0 / 100.0 / 50.0 | 93.0 | on | 1000 / 50 "
            "| 60 steps, strength 1.0 |") in proc.stdout
