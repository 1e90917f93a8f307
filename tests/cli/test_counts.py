"""Counts tables as a public contract: ``--counts-out`` and ``--counts`` (docs/scale.md).

The oracle is the row audit: a counts table made from rows (by ``--counts-out``, by a
pandas groupby, by DuckDB's GROUP BY as docs/scale.md writes it) must give the same
JSON as the rows themselves, bootstrap intervals, small-group flags and gates included,
bit for bit (only ``settings.source`` and ``settings.counts_column`` may differ).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import fairfix
from fairfix.cli import app

from .test_audit_cli import assert_one_line_error as one_line_error

runner = CliRunner()
GROUPS = ["--group", "sex", "--group", "race"]
# Gates and a min-group-size that flag the small group, so that the gates' evidence is compared too.
CHECKS = ["--bootstrap", "300", "--seed", "7", "--min-group-size", "50",
          "--fail-on", "equalized_odds_difference>0.9", "--fail-on", "worst_group_accuracy<0.2",
          "--fail-on", "accuracy<0.99"]


def make_frame(n: int = 3000, seed: int = 0, classes: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    race = rng.choice(["a", "b", "c"], n, p=[0.6, 0.37, 0.03])  # "c" is small
    y = rng.integers(0, classes, n)
    score = np.clip(rng.random(n) * 0.7 + 0.3 * (y > 0) * (sex == "M"), 0, 1)
    pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, classes, n))
    return pd.DataFrame({"sex": sex, "race": race, "y": y, "p": pred, "s": score, "id": np.arange(n)})


def run(*args: Any, code: int | None = 0) -> Any:
    result = runner.invoke(app, ["audit", *map(str, args)])
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    return result


def audit_json(*args: Any, code: int = 0) -> dict[str, Any]:
    return json.loads(run(*args, "--format", "json", code=code).stdout)


def comparable(report: dict[str, Any], drop: tuple[str, ...] = ()) -> str:
    """The JSON text, less what names the source (and the ``drop`` settings)."""
    report = json.loads(json.dumps(report))
    for key in ("source", "counts_column", *drop):
        report["settings"].pop(key, None)
    return json.dumps(report, sort_keys=True)


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rows")
    df = make_frame()
    df.to_parquet(d / "rows.parquet", index=False)
    df.to_csv(d / "rows.csv", index=False)
    return d


@pytest.mark.parametrize("ext", ["parquet", "csv"])
@pytest.mark.parametrize("mode", [["--pred", "p"], ["--score", "s", "--threshold", "0.6"]])
def test_counts_out_then_counts_in_equals_the_row_audit(rows: Path, tmp_path: Path, ext: str, mode: list[str]) -> None:
    out = tmp_path / f"counts.{ext}"
    # exit 1: a gate trips on these rows; both audits must agree on that too.
    direct = audit_json(rows / "rows.parquet", "--label", "y", *mode, *GROUPS, *CHECKS, "--counts-out", out, code=1)
    assert out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    pred = mode[1] if mode[0] == "--pred" else "pred"
    again = audit_json(out, "--label", "y", "--pred", pred, "--counts", "n", *GROUPS, *CHECKS, code=1)
    # A --score audit's counts hold the thresholded predictions: the settings say how they were made.
    how = ("prediction_column", "score_column", "threshold") if mode[0] == "--score" else ()
    assert comparable(again, how) == comparable(direct, how)
    if how:
        assert again["settings"]["prediction_column"] == "pred" and direct["settings"]["threshold"] == 0.6
    assert again["settings"]["counts_column"] == "n"
    assert any(g["small"] for g in again["groups"]) and any(g["insufficient_evidence"] for g in again["gates"])
    assert again["n"] == 3000 and "ci" in again["groups"][0]
    table = pq.read_table(out) if ext == "parquet" else pa.Table.from_pandas(pd.read_csv(out))
    assert table.column_names == ["sex", "race", "y", pred, "n"]
    assert sum(table.column("n").to_pylist()) == 3000


@pytest.mark.parametrize("mode", [["--pred", "p"], ["--score", "s"]])
def test_a_group_by_of_the_rows_audits_like_the_rows(rows: Path, tmp_path: Path, mode: list[str]) -> None:
    """What a warehouse's GROUP BY produces (here pandas) is a counts table, scores included."""
    df = pd.read_parquet(rows / "rows.parquet")
    keys = ["sex", "race", "y", mode[1]]
    counts = df.groupby(keys).size().rename("n").reset_index()
    counts.to_csv(tmp_path / "g.csv", index=False)
    direct = audit_json(rows / "rows.csv", "--label", "y", *mode, *GROUPS, *CHECKS, code=1)
    via = audit_json(tmp_path / "g.csv", "--label", "y", *mode, *GROUPS, *CHECKS, "--counts", "n", code=1)
    assert comparable(via) == comparable(direct)


def test_the_duckdb_sql_of_the_docs_gives_a_counts_table(rows: Path, tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    sql = (Path(__file__).resolve().parents[2] / "docs" / "scale.md").read_text()
    query = sql.split("```sql duckdb\n", 1)[1].split("```", 1)[0]
    query = query.replace("'predictions/*.parquet'", repr(str(rows / "rows.parquet")))
    query = query.replace("'counts.parquet'", repr(str(tmp_path / "counts.parquet")))
    query = query.replace("income", "y").replace("pred", "p")
    duckdb.sql(query)
    args = ["--label", "y", "--pred", "p", *GROUPS, *CHECKS]
    assert comparable(audit_json(tmp_path / "counts.parquet", *args, "--counts", "n", code=1)) == \
        comparable(audit_json(rows / "rows.parquet", *args, code=1))


def test_multiclass_and_missing_groups(tmp_path: Path) -> None:
    df = make_frame(classes=3)
    df.loc[::97, "race"] = None
    df.to_parquet(tmp_path / "rows.parquet", index=False)
    args = ["--label", "y", "--pred", "p", *GROUPS, "--keep-missing-groups", "--bootstrap", "200"]
    direct = audit_json(tmp_path / "rows.parquet", *args, "--counts-out", tmp_path / "c.parquet")
    assert direct["task"] == "multiclass"
    assert any(g["group"]["race"] == "<missing>" for g in direct["groups"])
    assert pq.read_table(tmp_path / "c.parquet").column("race").null_count > 0
    again = audit_json(tmp_path / "c.parquet", *args, "--counts", "n")
    assert comparable(again) == comparable(direct)


def test_dropna_counts_dropped_rows_by_their_counts(tmp_path: Path) -> None:
    df = make_frame()
    df["y"] = df["y"].astype("float64")
    df.loc[::50, "y"] = np.nan
    df.to_parquet(tmp_path / "rows.parquet", index=False)
    counts = df.groupby(["sex", "race", "y", "p"], dropna=False).size().rename("n").reset_index()
    counts.to_parquet(tmp_path / "c.parquet", index=False)
    args = ["--label", "y", "--pred", "p", *GROUPS, "--dropna"]
    direct = audit_json(tmp_path / "rows.parquet", *args)
    again = audit_json(tmp_path / "c.parquet", *args, "--counts", "n")
    assert direct["settings"]["dropped_rows"] == 60 == again["settings"]["dropped_rows"]
    assert comparable(again) == comparable(direct)
    line = one_line_error(run(tmp_path / "c.parquet", "--label", "y", "--pred", "p", *GROUPS, "--counts", "n",
                              code=None), "c.parquet", "'y'", "60 empty/NaN")
    assert "first at row" in line


def test_counts_from_several_sources_merge_by_summing(rows: Path, tmp_path: Path) -> None:
    df = pd.read_parquet(rows / "rows.parquet")
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, part in enumerate([df.iloc[:1000], df.iloc[1000:2000], df.iloc[2000:]]):
        c = part.groupby(["sex", "race", "y", "p"]).size().rename("n").reset_index()
        # One cell split over two rows, and a zero-count row of a group the rows never had.
        extra = pd.DataFrame([{**c.iloc[0].to_dict(), "n": 0}, {"sex": "X", "race": "z", "y": 1, "p": 1, "n": 0}])
        c = pd.concat([c, extra], ignore_index=True)
        (c.to_parquet if i else c.to_csv)(parts / (f"c{i}.parquet" if i else "c0.csv"), index=False)
    args = ["--label", "y", "--pred", "p", *GROUPS, *CHECKS]
    direct = comparable(audit_json(rows / "rows.parquet", *args, code=1))
    files = [parts / "c0.csv", parts / "c1.parquet", parts / "c2.parquet"]
    assert comparable(audit_json(*files, *args, "--counts", "n", code=1)) == direct
    assert comparable(audit_json(parts, *args, "--counts", "n", "--engine", "arrow", code=1)) == direct
    # Library: a list of sources, DataFrames included.
    frames = [pd.read_csv(files[0]), pd.read_parquet(files[1]), files[2]]
    rep = fairfix.audit(frames, label="y", pred="p", group=["sex", "race"], counts="n", bootstrap=300, seed=7,
                        min_group_size=50, fail_on=CHECKS[7::2])
    assert comparable(rep.to_dict()) == direct
    assert "X" not in {g["group"]["sex"] for g in rep.to_dict()["groups"]}


def test_library_counts_equals_rows() -> None:
    df = make_frame()
    counts = df.groupby(["sex", "race", "y", "p"]).size().rename("count").reset_index()
    a = fairfix.audit(df, label="y", pred="p", group=["sex", "race"], seed=3)
    b = fairfix.audit(counts, label="y", pred="p", group=["sex", "race"], counts="count", seed=3)
    assert comparable(a.to_dict()) == comparable(b.to_dict())
    assert np.array_equal(a.counts.counts, b.counts.counts) and a.counts.groups == b.counts.groups
    assert a.summary_ci == b.summary_ci


COUNTS_CSV = "g,y,p,n\na,1,1,5\na,0,0,7\nb,1,0,3\nb,0,1,4\n"


@pytest.mark.parametrize(("cell", "fragments"), [
    ("-3", ["a negative value (-3)", "at row 2"]),
    ("2.5", ["a fractional value (2.5)", "at row 2"]),
    ("", ["a missing value", "at row 2"]),
    ("lots", ["not numeric", "'lots'"]),
])
def test_bad_counts_are_exit_2(tmp_path: Path, cell: str, fragments: list[str]) -> None:
    lines = COUNTS_CSV.splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + "," + cell
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    result = run(path, "--label", "y", "--pred", "p", "--group", "g", "--counts", "n", code=None)
    one_line_error(result, "bad.csv", "count column 'n'", *fragments)


@pytest.mark.parametrize(("values", "fragment"), [
    ([5, -1, 3, 4], "a negative value (-1) at row 2"),
    ([5.0, 7.0, 0.25, 4.0], "a fractional value (0.25) at row 3"),
    ([5.0, None, 3.0, 4.0], "a missing value"),
    (["5", "7", "3", "4"], "not numeric (its type is string)"),
])
def test_bad_counts_in_parquet(tmp_path: Path, values: list[Any], fragment: str) -> None:
    pq.write_table(pa.table({"g": ["a", "a", "b", "b"], "y": [1, 0, 1, 0], "p": [1, 0, 0, 1], "n": values}),
                   tmp_path / "bad.parquet")
    result = run(tmp_path / "bad.parquet", "--label", "y", "--pred", "p", "--group", "g", "--counts", "n",
                 code=None)
    one_line_error(result, "bad.parquet", "count column 'n'", fragment)


def test_counts_usage_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(COUNTS_CSV)
    one_line_error(run(path, "--label", "y", "--pred", "p", "--group", "g", "--counts", "m", code=None),
                   "c.csv", "no column 'm'")
    one_line_error(run(path, "--label", "y", "--pred", "p", "--group", "g", "--counts", "g", code=None),
                   "different columns")
    one_line_error(run(path, "--label", "y", "--model", tmp_path, "--group", "g", "--counts", "n", code=None),
                   "--counts", "--model")
    zero = tmp_path / "zero.csv"
    zero.write_text("g,y,p,n\na,1,1,0\n")
    one_line_error(run(zero, "--label", "y", "--pred", "p", "--group", "g", "--counts", "n", code=None),
                   "zero.csv", "sums to 0")


def test_counts_out_is_never_overwritten_without_force(tmp_path: Path) -> None:
    src = tmp_path / "c.csv"
    src.write_text(COUNTS_CSV)
    out = tmp_path / "out.parquet"
    out.write_text("keep")
    args = [src, "--label", "y", "--pred", "p", "--group", "g", "--counts", "n", "--counts-out", out]
    one_line_error(run(*args, code=None), "out.parquet", "--force")
    assert out.read_text() == "keep"
    run(*args, "--force")
    assert pq.read_table(out).to_pylist()[0] == {"g": "a", "y": 0, "p": 0, "n": 7}
    one_line_error(run(*args[:-1], tmp_path / "out.json", code=None), "--counts-out", ".parquet or .csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "out.parquet"]


def test_counts_out_merges_counts(tmp_path: Path) -> None:
    """Counts in, counts out: many partial counts become one table, duplicates summed."""
    (tmp_path / "a.csv").write_text(COUNTS_CSV)
    (tmp_path / "b.csv").write_text("g,y,p,n\na,1,1,1\nc,1,1,2\n")
    run(tmp_path / "a.csv", tmp_path / "b.csv", "--label", "y", "--pred", "p", "--group", "g",
        "--counts", "n", "--counts-out", tmp_path / "all.csv", "--format", "json")
    assert (tmp_path / "all.csv").read_text().splitlines() == [
        '"g","y","p","n"', '"a",0,0,7', '"a",1,1,6', '"b",0,1,4', '"b",1,0,3', '"c",1,1,2']
