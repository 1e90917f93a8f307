"""DATA as a directory, a glob or several files, and ``--engine arrow|duckdb|auto``.

The oracle is the audit of one file holding all the rows: every engine and every
way of splitting the rows must give its JSON (less ``settings.source``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fairfix.cli import app

from .test_audit_cli import assert_one_line_error as one_line_error

runner = CliRunner()
GROUPS = ["--group", "sex", "--group", "race"]
CHECKS = ["--bootstrap", "200", "--seed", "1", "--min-group-size", "40", "--fail-on", "tpr_gap>0.99"]
ENGINES = ["arrow", "duckdb"]


def run(*args: Any, code: int | None = 0) -> Any:
    result = runner.invoke(app, ["audit", *map(str, args)])
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    return result


def audit_json(*args: Any) -> dict[str, Any]:
    return json.loads(run(*args, "--format", "json").stdout)


def comparable(report: dict[str, Any]) -> str:
    report = json.loads(json.dumps(report))
    report["settings"].pop("source")
    return json.dumps(report, sort_keys=True)


def frame(n: int = 2400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sex = rng.choice(["F", "M"], n)
    return pd.DataFrame({
        "sex": sex,
        "race": rng.choice(["a", "b", "c"], n, p=[0.6, 0.35, 0.05]),
        "y": y,
        "p": np.where(rng.random(n) < 0.75, y, 1 - y),
        "s": np.round(np.clip(rng.random(n) * 0.6 + 0.4 * y * (sex == "F"), 0, 1), 3),
    })


def write(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True)


def split(df: pd.DataFrame, folder: Path, ext: str, parts: int = 4) -> Path:
    step = -(-len(df) // parts)
    for i in range(parts):
        write(df.iloc[i * step:(i + 1) * step], folder / f"day={i}" / f"part-{i:05d}.{ext}")
    (folder / "_SUCCESS").write_text("")
    (folder / "day=0" / ".part-00000.crc").write_text("not data")
    return folder


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    df = frame()
    path = tmp_path_factory.mktemp("whole") / "all.parquet"
    write(df, path)
    return df, path


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
@pytest.mark.parametrize("mode", [["--pred", "p"], ["--score", "s", "--threshold", "0.55"]])
def test_a_directory_audits_like_one_file(whole: Any, tmp_path: Path, engine: str, ext: str, mode: list[str]) -> None:
    if engine == "duckdb":
        pytest.importorskip("duckdb")
    df, path = whole
    folder = split(df, tmp_path / "logs", ext)
    args = ["--label", "y", *mode, *GROUPS, *CHECKS]
    expected = comparable(audit_json(path, *args))
    got = audit_json(folder, *args, "--engine", engine)
    assert comparable(got) == expected
    assert got["settings"]["source"] == str(folder)
    glob = str(tmp_path / "logs" / "*" / f"*.{ext}")
    assert comparable(audit_json(glob, *args, "--engine", engine)) == expected


def test_mixed_formats_and_several_data_arguments(whole: Any, tmp_path: Path) -> None:
    df, path = whole
    write(df.iloc[:800], tmp_path / "a.csv")
    write(df.iloc[800:1500], tmp_path / "b.jsonl")
    write(df.iloc[1500:], tmp_path / "c" / "c.parquet")
    args = ["--label", "y", "--pred", "p", *GROUPS, *CHECKS]
    expected = comparable(audit_json(path, *args))
    assert comparable(audit_json(tmp_path / "a.csv", tmp_path / "b.jsonl", tmp_path / "c", *args)) == expected
    # auto falls back to arrow when DuckDB cannot take the mix; duckdb says why.
    assert comparable(audit_json(tmp_path, *args)) == expected
    if pytest.importorskip("duckdb"):
        one_line_error(run(tmp_path, *args, "--engine", "duckdb", code=None), "mix formats", "--engine arrow")


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_rows_in_one_file_name_it(whole: Any, tmp_path: Path, engine: str) -> None:
    if engine == "duckdb":
        pytest.importorskip("duckdb")
    df, _ = whole
    bad = df.copy()
    bad["s"] = bad["s"].astype(float)
    bad.loc[1900, "s"] = 1.5
    folder = split(bad, tmp_path / "logs", "parquet")
    line = one_line_error(run(folder, "--label", "y", "--score", "s", *GROUPS, "--engine", engine, code=None),
                          "score column 's'", "outside [0, 1]", "1.5")
    if engine == "arrow":
        assert "part-00003.parquet" in line
    nulls = df.astype({"y": "float64"})
    nulls.loc[[5, 700], "y"] = np.nan
    folder = split(nulls, tmp_path / "nulls", "csv")
    line = one_line_error(run(folder, "--label", "y", "--pred", "p", *GROUPS, "--engine", engine, code=None),
                          "column 'y'", "2 empty/NaN", "--dropna")
    if engine == "arrow":
        assert "part-00000.csv" in line and "first at row 6" in line
    dropped = audit_json(folder, "--label", "y", "--pred", "p", *GROUPS, "--engine", engine, "--dropna")
    assert dropped["settings"]["dropped_rows"] == 2 and dropped["n"] == len(df) - 2


@pytest.mark.parametrize("engine", ENGINES)
def test_counts_files_in_a_directory(whole: Any, tmp_path: Path, engine: str) -> None:
    if engine == "duckdb":
        pytest.importorskip("duckdb")
    df, path = whole
    for i, part in enumerate([df.iloc[:1000], df.iloc[1000:]]):
        c = part.groupby(["sex", "race", "y", "p"]).size().rename("n").reset_index()
        write(c, tmp_path / "counts" / f"c{i}.parquet")
    args = ["--label", "y", "--pred", "p", *GROUPS, *CHECKS]
    expected = comparable(audit_json(path, *args))
    got = json.loads(run(tmp_path / "counts", *args, "--counts", "n", "--engine", engine,
                         "--format", "json").stdout)
    got["settings"].pop("counts_column")
    assert comparable(got) == expected
    c = df.groupby(["sex", "race", "y", "p"]).size().rename("n").reset_index()
    c.loc[3, "n"] = -2
    write(c, tmp_path / "bad" / "c.parquet")
    one_line_error(run(tmp_path / "bad", *args, "--counts", "n", "--engine", engine, code=None),
                   "count column 'n'", "negative value (-2)")


def test_missing_column_in_one_file_is_named_before_reading(whole: Any, tmp_path: Path) -> None:
    df, _ = whole
    folder = split(df, tmp_path / "logs", "parquet")
    write(df.drop(columns=["race"]).iloc[:10], folder / "day=9" / "late.parquet")
    one_line_error(run(folder, "--label", "y", "--pred", "p", *GROUPS, code=None), "late.parquet", "no column 'race'")


def test_nothing_to_read_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    one_line_error(run(tmp_path / "empty", "--label", "y", "--pred", "p", "--group", "g", code=None),
                   "empty", "no data files")
    one_line_error(run(str(tmp_path / "*.parquet"), "--label", "y", "--pred", "p", "--group", "g", code=None),
                   "*.parquet", "no file matches")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "notes.md").write_text("x")
    one_line_error(run(tmp_path / "odd", "--label", "y", "--pred", "p", "--group", "g", code=None),
                   "notes.md", "cannot tell the format")


def test_engine_usage_errors(whole: Any, tmp_path: Path) -> None:
    import fairfix
    from fairfix import errors

    df, path = whole
    result = run(path, "--label", "y", "--pred", "p", "--group", "sex", "--engine", "hive", code=None)
    assert result.exit_code == 2
    with pytest.raises(errors.UsageError, match="--engine .hive."):
        fairfix.audit(df, label="y", pred="p", group="sex", engine="hive")
    pytest.importorskip("duckdb")
    with pytest.raises(errors.UsageError, match="<DataFrame>: DuckDB reads files only"):
        fairfix.audit(df, label="y", pred="p", group="sex", engine="duckdb")
    one_line_error(run(path, "--label", "y", "--model", tmp_path, "--group", "sex", "--engine", "duckdb",
                       code=None), "--engine duckdb", "--model")


def test_duckdb_engine_on_one_file(whole: Any) -> None:
    pytest.importorskip("duckdb")
    _, path = whole
    args = ["--label", "y", "--score", "s", *GROUPS, *CHECKS]
    assert comparable(audit_json(path, *args, "--engine", "duckdb")) == comparable(audit_json(path, *args))


def test_a_small_audit_imports_neither_duckdb_nor_pyarrow_dataset(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("y,p,g\n1,1,a\n0,0,a\n1,0,b\n0,1,b\n")
    code = (
        "import sys; from fairfix.cli import main\n"
        "sys.argv = ['fairfix', 'audit', sys.argv[1], '--label', 'y', '--pred', 'p', '--group', 'g',"
        " '--format', 'json', '--output', sys.argv[2]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('duckdb', 'pyarrow.dataset', 'pyarrow._dataset'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.csv"), str(tmp_path / "o.json")],
                         capture_output=True, text=True, env={**os.environ, "FAIRFIX_NO_PROGRESS": "1"}, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out
    assert json.loads((tmp_path / "o.json").read_text())["n"] == 4
