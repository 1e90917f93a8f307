"""``fairfix audit`` from the command line: the contract of DESIGN.md section 3.

Formats, stdin, ``--fail-on`` gates and ``insufficient_evidence``, every kind of bad
input (exit 2, one line on stderr naming the file, column or value), ``--output``
(atomic, never overwritten without ``--force``), the positive-label rule,
FAIRFIX_DEBUG, exit 3 for the unexpected, and NO_COLOR.

Most tests run the Typer app in-process with ``CliRunner``; a few run the installed
``fairfix`` console script to check what a shell sees (stdin, exit codes, a terminal).
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fairfix.cli import app

# --------------------------------------------------------------------------------------
# Data: two groups of 40 rows with known confusion counts.
#
#   group   y=1 -> pred 1 / 0    y=0 -> pred 1 / 0    accuracy  TPR  FPR  selection
#   north        16 / 4               2 / 18            0.85     0.8  0.1    0.45
#   south        10 / 10              4 / 16            0.65     0.5  0.2    0.35
#
# Within each group the rows alternate sex M/F, so --group g --group sex gives four
# groups of 20.  score is 0.8 where pred is 1 and 0.3 where it is 0.
# --------------------------------------------------------------------------------------
CELLS = {
    "north": [(1, 1, 16), (1, 0, 4), (0, 1, 2), (0, 0, 18)],
    "south": [(1, 1, 10), (1, 0, 10), (0, 1, 4), (0, 0, 16)],
}
EXPECTED_SUMMARY = {
    "accuracy": 0.75,
    "worst_group_accuracy": 0.5,
    "tpr_gap": 0.3,
    "fpr_gap": 0.1,
    "accuracy_gap": 0.2,
    "equalized_odds_difference": 0.3,
    "equalized_odds_mean": 0.2,
    "demographic_parity_difference": 0.1,
    "demographic_parity_ratio": 0.35 / 0.45,
}
EXPECTED_GROUPS = {
    "north": {"n": 40, "accuracy": 0.85, "tpr": 0.8, "fpr": 0.1, "selection_rate": 0.45},
    "south": {"n": 40, "accuracy": 0.65, "tpr": 0.5, "fpr": 0.2, "selection_rate": 0.35},
}
COLUMNS = ["id", "y", "pred", "score", "g", "sex"]
COMMON = ["--label", "y", "--group", "g", "--bootstrap", "0"]
BASE = [*COMMON, "--pred", "pred"]
ANSI = re.compile(r"\x1b\[")
SGR = re.compile(r"\x1b\[[0-9;]*m")  # colour / bold / italic escapes


def make_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for g, cells in CELLS.items():
        k = 0
        for y, p, n in cells:
            for _ in range(n):
                rows.append({"id": len(rows), "y": y, "pred": p, "score": 0.8 if p else 0.3,
                             "g": g, "sex": "F" if k % 2 else "M"})
                k += 1
    return rows


def csv_text(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    return buf.getvalue()


def jsonl_text(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the reference rows as CSV, CSV.gz, JSON Lines and Parquet."""
    d = tmp_path_factory.mktemp("data")
    rows = make_rows()
    (d / "preds.csv").write_text(csv_text(rows, COLUMNS))
    (d / "preds.jsonl").write_text(jsonl_text(rows))
    with gzip.open(d / "preds.csv.gz", "wt") as fh:
        fh.write(csv_text(rows, COLUMNS))
    pq.write_table(pa.Table.from_pylist(rows), d / "preds.parquet")
    return d


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's shell must not change what the tests see."""
    for var in ("FAIRFIX_DEBUG", "NO_COLOR", "FORCE_COLOR", "FAIRFIX_NO_PROGRESS", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)


runner = CliRunner()


def run(*args: Any, input: str | bytes | None = None, env: dict[str, str] | None = None,
        code: int | None = 0) -> Any:
    """Invoke ``fairfix audit ARGS``; check the exit code when ``code`` is not None."""
    result = runner.invoke(app, ["audit", *map(str, args)], input=input, env=env)
    if code is not None:
        assert result.exit_code == code, (
            f"exit {result.exit_code}, wanted {code}\nstderr: {result.stderr}\n"
            f"stdout: {result.stdout[:2000]}\nexception: {result.exception!r}"
        )
    return result


def run_json(*args: Any, **kw: Any) -> tuple[dict[str, Any], Any]:
    result = run(*args, "--format", "json", **kw)
    return json.loads(result.stdout), result


def assert_one_line_error(result: Any, *fragments: str) -> str:
    """Exit 2 and exactly one line on stderr, with every fragment in it and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("fairfix: error: "), line
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in line, (f, line)
    assert result.stdout == ""
    return line


def by_group(report: dict[str, Any], column: str = "g") -> dict[Any, dict[str, Any]]:
    return {g["group"][column]: g for g in report["groups"]}


# ---------------------------------------------------------------------------- formats
def test_json_format(data: Path) -> None:
    report, result = run_json(data / "preds.csv", *BASE)
    assert report["schema"] == "fairfix.audit/1"
    assert report["n"] == 80
    assert report["label"] == "y"
    assert report["group_columns"] == ["g"]
    groups = by_group(report)
    assert set(groups) == {"north", "south"}
    for name, want in EXPECTED_GROUPS.items():
        for key, value in want.items():
            assert groups[name][key] == pytest.approx(value), (name, key)
        assert groups[name]["small"] is False
    for key, value in EXPECTED_SUMMARY.items():
        assert report["summary"][key] == pytest.approx(value), key
    assert report["summary"]["worst_group"] == {"group": {"g": "south"}, "label": 1}
    assert report["overall"]["n"] == 80
    assert report["gates"] == []
    assert {(c["group"]["g"], c["label"]): c["n"] for c in report["cells"]} == {
        ("north", 0): 20, ("north", 1): 20, ("south", 0): 20, ("south", 1): 20}


def test_json_intervals_with_bootstrap(data: Path) -> None:
    args = ["--label", "y", "--pred", "pred", "--group", "g", "--bootstrap", "200", "--seed", "3"]
    report, _ = run_json(data / "preds.csv", *args)
    again, _ = run_json(data / "preds.csv", *args)
    assert report["summary_ci"] == again["summary_ci"]  # same seed, same intervals
    lo, hi = report["summary_ci"]["accuracy"]
    assert lo <= 0.75 <= hi and lo < hi
    for g in report["groups"]:
        lo, hi = g["ci"]["tpr"]
        assert lo <= g["tpr"] <= hi


def test_csv_format(data: Path) -> None:
    result = run(data / "preds.csv", *BASE, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["g"] for r in rows] == ["north", "south"]  # one row per group
    for r in rows:
        want = EXPECTED_GROUPS[r["g"]]
        assert int(r["n"]) == want["n"]
        for key in ("accuracy", "tpr", "fpr", "selection_rate"):
            assert float(r[key]) == pytest.approx(want[key]), key
        assert r["small"] == "False"


def test_csv_format_intersectional(data: Path) -> None:
    result = run(data / "preds.csv", *BASE, "--group", "sex", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["g"], r["sex"]) for r in rows] == [
        ("north", "F"), ("north", "M"), ("south", "F"), ("south", "M")]
    assert [int(r["n"]) for r in rows] == [20, 20, 20, 20]


def test_markdown_format(data: Path) -> None:
    result = run(data / "preds.csv", *BASE, "--format", "markdown")
    lines = result.stdout.splitlines()
    assert "| g | n | accuracy | TPR | FPR | selection rate |" in lines
    assert "|---|---|---|---|---|---|" in lines
    assert any(line.startswith("| north | 40 | 0.850") for line in lines)
    assert any(line.startswith("| south | 40 | **0.650**") for line in lines)  # worst in bold
    assert "| worst-group accuracy | 0.500 |  |" in lines


def test_markdown_marks_no_worst_value_among_equals(tmp_path: Path) -> None:
    f = write(tmp_path / "same.csv", "y,pred,g\n1,1,a\n0,0,a\n1,1,b\n0,0,b\n")
    result = run(f, *BASE, "--format", "markdown")
    assert "| a | 2 (small) | 1.000 | 1.000 | 0.000 | 0.500 |" in result.stdout
    assert "**" not in result.stdout


def test_table_format_is_the_default(data: Path) -> None:
    result = run(data / "preds.csv", *BASE)
    out = result.stdout
    assert "north" in out and "south" in out
    assert "summary" in out and "worst-group accuracy" in out
    assert "0.850" in out and "0.650" in out
    assert not ANSI.search(out)  # not a terminal: no escapes
    assert run(data / "preds.csv", *BASE, "--format", "table").stdout == out


def test_table_folds_long_group_names(tmp_path: Path) -> None:
    rows = make_rows()
    long_name = "Asian-Pac-Islander-" * 3 + "end"
    for r in rows:
        r["g"] = long_name if r["g"] == "north" else r["g"]
    f = tmp_path / "long.csv"
    f.write_text(csv_text(rows))
    result = run(f, *BASE, env={"COLUMNS": "60"})
    table = result.stdout.split("summary")[0]
    first_cells = [line.split("│")[1].strip() for line in table.splitlines()
                   if line.startswith("│")]
    assert len(first_cells) > 2  # the name was folded over several lines ...
    assert long_name in "".join(first_cells)  # ... and kept whole: no ellipsis
    assert "…" not in table


@pytest.mark.parametrize("name", ["preds.csv.gz", "preds.jsonl", "preds.parquet"])
def test_input_formats_agree(data: Path, name: str) -> None:
    reference, _ = run_json(data / "preds.csv", *BASE)
    report, _ = run_json(data / name, *BASE)
    assert report["n"] == 80
    assert report["summary"] == reference["summary"]
    assert report["groups"] == reference["groups"]


def test_score_with_threshold(data: Path) -> None:
    base = COMMON
    from_pred, _ = run_json(data / "preds.csv", *base, "--pred", "pred")
    from_score, _ = run_json(data / "preds.csv", *base, "--score", "score")
    assert from_score["summary"] == from_pred["summary"]
    assert from_score["settings"]["threshold"] == 0.5
    strict, _ = run_json(data / "preds.csv", *base, "--score", "score", "--threshold", "0.9")
    assert [g["selection_rate"] for g in strict["groups"]] == [0.0, 0.0]


# ------------------------------------------------------------------------------ stdin
def test_stdin_csv_by_default(data: Path) -> None:
    report, _ = run_json("-", *BASE, input=(data / "preds.csv").read_text())
    assert report["n"] == 80
    assert report["settings"]["source"] == "<stdin>"
    assert by_group(report)["south"]["accuracy"] == pytest.approx(0.65)


def test_stdin_jsonl_with_input_format(data: Path) -> None:
    report, _ = run_json("-", *BASE, "--input-format", "jsonl",
                         input=(data / "preds.jsonl").read_text())
    assert report["n"] == 80
    assert report["summary"]["accuracy"] == pytest.approx(0.75)


def test_stdin_parquet_with_input_format(data: Path) -> None:
    report, _ = run_json("-", *BASE, "--input-format", "parquet",
                         input=(data / "preds.parquet").read_bytes())
    assert report["n"] == 80


def test_stdin_is_csv_unless_told(data: Path) -> None:
    result = run("-", *BASE, input=(data / "preds.jsonl").read_text(), code=None)
    assert_one_line_error(result, "<stdin>", "no column 'y'")


def test_stdin_empty() -> None:
    assert_one_line_error(run("-", *BASE, input="", code=None), "<stdin>", "empty")


# ------------------------------------------------------------------------------ gates
# accuracy is exactly 0.75 (60/80); each operator trips on one side and passes on the other.
GATES = [
    ("accuracy>0.7", 1), ("accuracy>0.75", 0),
    ("accuracy>=0.75", 1), ("accuracy>=0.8", 0),
    ("accuracy<0.8", 1), ("accuracy<0.75", 0),
    ("accuracy<=0.75", 1), ("accuracy<=0.7", 0),
    ("equalized_odds_difference > 0.25", 1), ("equalized_odds_difference >= 0.35", 0),
]


@pytest.mark.parametrize(("expr", "code"), GATES)
def test_gate_operators(data: Path, expr: str, code: int) -> None:
    report, result = run_json(data / "preds.csv", *BASE, "--fail-on", expr, code=code)
    (gate,) = report["gates"]
    assert gate["expr"] == expr.strip()
    assert gate["tripped"] is bool(code)
    assert gate["value"] == pytest.approx(report["summary"][gate["metric"]])
    assert gate["insufficient_evidence"] is False  # groups of 40 >= 30, no intervals
    if code:
        assert f"gate tripped: {expr.strip()}" in result.stderr
    else:
        assert "gate tripped" not in result.stderr
        assert "insufficient" not in result.stderr


def test_gates_tripped_and_passed_together(data: Path) -> None:
    report, result = run_json(data / "preds.csv", *BASE, "--fail-on", "accuracy<0.9",
                              "--fail-on", "worst_group_accuracy<0.1", code=1)
    assert [g["tripped"] for g in report["gates"]] == [True, False]
    assert "gate tripped: accuracy<0.9" in result.stderr
    assert "worst_group_accuracy<0.1" not in result.stderr


def test_gate_on_table_output(data: Path) -> None:
    result = run(data / "preds.csv", *BASE, "--fail-on", "fpr_gap>=0.09", code=1)
    assert "TRIPPED" in result.stdout
    assert "gate tripped: fpr_gap>=0.09 (value 0.1)" in result.stderr


def test_gate_trips_with_output_file(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    run(data / "preds.csv", *BASE, "--fail-on", "tpr_gap>0.2", "--output", out, code=1)
    assert json.loads(out.read_text())["gates"][0]["tripped"] is True


def test_pass_with_small_group_is_insufficient_evidence(data: Path) -> None:
    report, result = run_json(data / "preds.csv", *BASE, "--min-group-size", "50",
                              "--fail-on", "equalized_odds_difference>0.5")
    (gate,) = report["gates"]
    assert gate["tripped"] is False
    assert gate["insufficient_evidence"] is True
    assert any("g=north (n=40)" in r for r in gate["reasons"])
    assert [g["small"] for g in report["groups"]] == [True, True]
    err = result.stderr
    assert "gate passed without sufficient evidence: equalized_odds_difference>0.5" in err
    assert "g=north (n=40)" in err and "g=south (n=40)" in err
    assert "group g=south has 40 rows (< --min-group-size 50)" in err


def test_pass_with_large_groups_is_sufficient(data: Path) -> None:
    report, result = run_json(data / "preds.csv", *BASE, "--min-group-size", "10",
                              "--fail-on", "equalized_odds_difference>0.5")
    assert report["gates"][0]["insufficient_evidence"] is False
    assert "sufficient evidence" not in result.stderr


def test_pass_inside_the_interval_is_insufficient_evidence(data: Path) -> None:
    report, result = run_json(data / "preds.csv", "--label", "y", "--pred", "pred",
                              "--group", "g", "--bootstrap", "300",
                              "--fail-on", "equalized_odds_difference>0.31")
    (gate,) = report["gates"]
    lo, hi = report["summary_ci"]["equalized_odds_difference"]
    assert lo <= 0.31 <= hi
    assert gate["tripped"] is False and gate["insufficient_evidence"] is True
    assert "interval" in result.stderr


# -------------------------------------------------------------------------- bad input
def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def with_values(column: str, values: dict[int, Any]) -> str:
    """The reference CSV with some cells of ``column`` replaced (row index -> value)."""
    rows = make_rows()
    for i, v in values.items():
        rows[i][column] = v
    return csv_text(rows, COLUMNS)


BAD_INPUT: list[tuple[str, str | bytes | None, list[str], list[str]]] = [
    # (file name, content (None: absent), extra options, fragments of the message)
    ("nope.csv", None, [], ["nope.csv", "no such file"]),
    ("empty.csv", "", [], ["empty.csv", "empty"]),
    ("blank.csv", "\n\n", [], ["blank.csv", "empty"]),
    ("header.csv", "id,y,pred,score,g,sex\n", [], ["header.csv", "no rows"]),
    ("garbage.parquet", b"\x00\xffnot parquet\x13" * 40, [],
     ["garbage.parquet", "cannot read as parquet"]),
    ("garbage.csv", b"\xff\xfe\x81\x00" * 64, [], ["garbage.csv", "cannot read as csv"]),
    ("garbage.jsonl", b"{{{ not json\n" * 8, [], ["garbage.jsonl", "cannot read as jsonl"]),
    ("preds.xlsx", "y,pred,g\n", [], ["preds.xlsx", "--input-format"]),
    ("ok.csv", "REF", ["--pred", "prediction"],
     ["ok.csv", "no column 'prediction'", "columns are: 'id', 'y', 'pred', 'score', 'g', 'sex'"]),
    ("ok.csv", "REF", ["--group", "region"], ["ok.csv", "no column 'region'", "'sex'"]),
    ("nan_label.csv", with_values("y", {1: "", 5: "NaN", 7: None}), [],
     ["nan_label.csv", "'y'", "3 empty/NaN value(s)", "first at row 2", "--dropna"]),
    ("nan_pred.csv", with_values("pred", {3: "nan", 60: ""}), [],
     ["nan_pred.csv", "'pred'", "2 empty/NaN value(s)", "first at row 4"]),
    ("nan_score.csv", with_values("score", {0: ""}), ["--score", "score"],
     ["nan_score.csv", "'score'", "1 empty/NaN value(s)"]),
    ("text_score.csv", with_values("score", {10: "high"}), ["--score", "score"],
     ["text_score.csv", "score column 'score' is not numeric", "'high'"]),
    ("big_score.csv", with_values("score", {10: 1.5, 11: -0.2}), ["--score", "score"],
     ["big_score.csv", "score column 'score'", "2 value(s) outside [0, 1]", "1.5"]),
    ("one_label.csv", "y,pred,g\n1,1,a\n1,0,a\n1,1,b\n", [],
     ["one_label.csv", "label column 'y' has one value only (1)"]),
    ("no_group.csv", with_values("g", {4: "", 50: None}), [],
     ["no_group.csv", "group column 'g'", "2 missing value(s)", "--keep-missing-groups"]),
    ("ok.csv", "REF", ["--fail-on", "fairness>0.1"],
     ["--fail-on 'fairness>0.1'", "unknown metric 'fairness'", "equalized_odds_difference"]),
    ("ok.csv", "REF", ["--fail-on", "accuracy=>0.5"], ["'accuracy=>0.5'", "METRIC OP NUMBER"]),
    ("ok.csv", "REF", ["--fail-on", "accuracy"], ["'accuracy'", "METRIC OP NUMBER"]),
    ("ok.csv", "REF", ["--fail-on", "accuracy<1e999"], ["'accuracy<1e999'", "not a finite number"]),
    ("ok.csv", "REF", ["--positive", "2"], ["--positive '2'", "not a label value", "0, 1"]),
    ("ok.csv", "REF", ["--pred", "pred", "--score", "score"], ["--pred", "--score"]),  # both
    ("ok.csv", "REF", ["--threshold", "0.3"], ["--threshold"]),  # without --score
    ("ok.csv", "REF", ["--ci", "1.5"], ["--ci 1.5"]),
    ("ok.csv", "REF", ["--group", "y"], ["different columns"]),
    ("ok.csv", "REF", ["--input-format", "xlsx"], ["--input-format 'xlsx'", "csv, parquet, jsonl"]),
]


@pytest.mark.parametrize(("name", "content", "extra", "fragments"), BAD_INPUT,
                         ids=[f"{c[0]}:{' '.join(c[2])}" for c in BAD_INPUT])
def test_bad_input_is_exit_2_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           name: str, content: Any, extra: list[str],
                                           fragments: list[str]) -> None:
    if content == "REF":
        content = csv_text(make_rows(), COLUMNS)
    if content is not None:
        write(tmp_path / name, content)
    monkeypatch.chdir(tmp_path)  # messages name the file as given on the command line
    predictor = [] if "--pred" in extra or "--score" in extra else ["--pred", "pred"]
    assert_one_line_error(run(name, *COMMON, *predictor, *extra, code=None), *fragments)


def test_data_directory_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "d.csv").mkdir()
    assert_one_line_error(run(tmp_path / "d.csv", *BASE, code=None), "d.csv", "directory")


def test_dropna_skips_and_reports(tmp_path: Path) -> None:
    rows = make_rows()
    rows[0]["y"] = ""
    rows[1]["y"], rows[1]["pred"] = "NaN", ""  # both empty: dropped once
    rows[70]["pred"] = None
    f = write(tmp_path / "gaps.csv", csv_text(rows, COLUMNS))
    assert_one_line_error(run(f, *BASE, code=None), "'y'", "2 empty/NaN value(s)", "--dropna")
    report, result = run_json(f, *BASE, "--dropna")
    assert report["n"] == 77
    assert report["settings"]["dropped_rows"] == 3
    assert "dropped 3 row(s)" in result.stderr


def test_dropna_with_score(tmp_path: Path) -> None:
    f = write(tmp_path / "s.csv", with_values("score", {0: "", 41: "nan"}))
    report, result = run_json(f, *COMMON, "--score", "score", "--dropna")
    assert report["n"] == 78
    assert "dropped 2 row(s)" in result.stderr


def test_dropna_of_every_row(tmp_path: Path) -> None:
    f = write(tmp_path / "all.csv", "y,pred,g\n,1,a\n,0,b\n")
    assert_one_line_error(run(f, *BASE, "--dropna", code=None), "all.csv", "no rows left")


def test_keep_missing_groups(tmp_path: Path) -> None:
    f = write(tmp_path / "mg.csv", with_values("g", {0: "", 1: None, 2: "NA"}))
    report, result = run_json(f, *BASE, "--keep-missing-groups")
    groups = by_group(report)
    assert set(groups) == {"<missing>", "north", "south"}
    assert groups["<missing>"]["n"] == 3
    assert groups["north"]["n"] == 37
    assert report["n"] == 80
    assert report["settings"]["keep_missing_groups"] is True
    assert "group g=<missing> has 3 rows" in result.stderr


def test_missing_groups_count_in_message(tmp_path: Path) -> None:
    f = write(tmp_path / "mg.csv", with_values("g", {0: "", 1: None, 2: "NA"}))
    assert_one_line_error(run(f, *BASE, code=None), "3 missing value(s)", "first at row 1")


def test_label_and_prediction_types_differ(tmp_path: Path) -> None:
    # Labels 0/1, one prediction "unknown": used to crash (exit 3) choosing the positive label.
    f = write(tmp_path / "odd.csv", with_values("pred", {0: "unknown"}))
    report, _ = run_json(f, *BASE)
    assert report["n"] == 80
    assert str(report["positive_label"]) == "1"


# ----------------------------------------------------------------------------- output
def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_output_writes_file_and_nothing_else(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    result = run(data / "preds.csv", *BASE, "--output", out)
    assert result.stdout == ""
    assert f"wrote {out}" in result.stderr
    assert json.loads(out.read_text())["n"] == 80  # format from the extension
    assert listing(tmp_path) == {"audit.json"}  # no temporary file left


@pytest.mark.parametrize(("name", "check"), [
    ("audit.csv", lambda t: t.startswith("g,n,accuracy")),
    ("audit.md", lambda t: t.startswith("### Audit of `y`")),
    ("audit.txt", lambda t: "north" in t and not ANSI.search(t)),
])
def test_output_format_from_extension(data: Path, tmp_path: Path, name: str, check: Any) -> None:
    run(data / "preds.csv", *BASE, "-o", tmp_path / name)
    assert check((tmp_path / name).read_text())


def test_output_format_option_wins(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.txt"
    run(data / "preds.csv", *BASE, "-o", out, "--format", "json")
    assert json.loads(out.read_text())["schema"] == "fairfix.audit/1"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_output_has_ordinary_permissions(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    run(data / "preds.csv", *BASE, "--output", out)
    plain = tmp_path / "plain"
    plain.write_text("x")  # what any new file gets under the current umask
    assert (out.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)
    os.chmod(out, 0o640)
    run(data / "preds.csv", *BASE, "--output", out, "--force")
    assert out.stat().st_mode & 0o777 == 0o640  # an overwritten file keeps its mode


def test_output_exists_without_force(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    out.write_text("precious\n")
    result = run(data / "preds.csv", *BASE, "--output", out, code=None)
    assert_one_line_error(result, str(out), "exists", "--force")
    assert out.read_text() == "precious\n"
    assert listing(tmp_path) == {"audit.json"}
    # checked before the data is read: the output error wins over a missing file
    result = run(tmp_path / "missing.csv", *BASE, "--output", out, code=None)
    assert_one_line_error(result, "exists")
    run(data / "preds.csv", *BASE, "--output", out, "--force")
    assert json.loads(out.read_text())["n"] == 80
    assert listing(tmp_path) == {"audit.json"}


def test_output_is_a_directory(data: Path, tmp_path: Path) -> None:
    (tmp_path / "out.json").mkdir()
    for force in ([], ["--force"]):  # not "exists; pass --force": --force would not help
        result = run(data / "preds.csv", *BASE, "--output", tmp_path / "out.json", *force,
                     code=None)
        assert_one_line_error(result, "out.json", "is a directory")


def test_output_folder_missing(data: Path, tmp_path: Path) -> None:
    result = run(data / "preds.csv", *BASE, "--output", tmp_path / "no" / "a.json", code=None)
    assert_one_line_error(result, "does not exist")


def test_output_untouched_after_bad_data(tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    out.write_text("old\n")
    bad = write(tmp_path / "bad.csv", "y,pred,g\n1,1,a\n")
    assert_one_line_error(run(bad, *BASE, "-o", out, "--force", code=None), "one value only")
    assert out.read_text() == "old\n"
    assert listing(tmp_path) == {"audit.json", "bad.csv"}


def test_output_write_failure_leaves_no_temporary(data: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import fairfix.report.io as fio

    def full_disk(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fio.os, "replace", full_disk)
    out = tmp_path / "audit.json"
    out.write_text("old\n")
    result = run(data / "preds.csv", *BASE, "--output", out, "--force", code=2)
    assert "Traceback" not in result.stderr
    *_, last = result.stderr.splitlines()  # after the notes of a finished audit
    assert last == f"fairfix: error: {out}: cannot write: No space left on device"
    assert out.read_text() == "old\n"
    assert listing(tmp_path) == {"audit.json"}


# ---------------------------------------------------------------------- positive label
def labelled(tmp_path: Path, name: str, neg: str, pos: str) -> Path:
    rows = make_rows()
    for r in rows:
        r["y"] = pos if r["y"] == 1 else neg
        r["pred"] = pos if r["pred"] == 1 else neg
    return write(tmp_path / name, csv_text(rows, COLUMNS))


@pytest.mark.parametrize(("neg", "pos", "want", "source"), [
    ("0", "1", 1, "1 is the positive label"),
    ("False", "True", True, "True is the positive label"),
    ("<=50K", ">50K", ">50K", "lexically larger"),
    ("yes", "no", "yes", "lexically larger"),  # "yes" > "no": the rule, not the meaning
])
def test_default_positive_label(tmp_path: Path, neg: str, pos: str, want: Any, source: str) -> None:
    f = labelled(tmp_path, "l.csv", neg, pos)
    report, result = run_json(f, *BASE)
    assert report["positive_label"] == want
    assert type(report["positive_label"]) is type(want)
    assert source in report["positive_label_source"]
    assert report["positive_label_source"].startswith("default")
    assert f"positive label {want!r}" in result.stderr and "--positive" in result.stderr
    # In the ("yes", "no") case "yes" marks the data's class 0: north's TPR is its TNR.
    assert by_group(report)["north"]["tpr"] == pytest.approx(0.9 if want == "yes" else 0.8)


def test_default_positive_label_on_the_demo_file() -> None:
    from fairfix.datasets import path

    demo = path("adult_test_predictions.csv.gz")
    report, result = run_json(demo, "--label", "income", "--pred", "pred", "--group", "sex",
                              "--group", "race", "--bootstrap", "0")
    assert report["n"] == 16281
    assert report["positive_label"] == ">50K"
    assert len(report["groups"]) == 10
    assert {tuple(g["group"]) for g in report["groups"]} == {("sex", "race")}
    assert "'>50K' is the lexically larger label" in result.stderr


@pytest.mark.parametrize(("neg", "pos", "given", "want", "tpr"), [
    # tpr of group north: 0.8 for the data's own positive class, 0.9 (its TNR) for the other
    ("0", "1", "0", 0, 0.9),
    ("0", "1", "1.0", 1, 0.8),
    ("False", "True", "false", False, 0.9),
    ("<=50K", ">50K", "<=50K", "<=50K", 0.9),
    ("no", "yes", "yes", "yes", 0.8),
])
def test_positive_option(tmp_path: Path, neg: str, pos: str, given: str, want: Any,
                         tpr: float) -> None:
    f = labelled(tmp_path, "l.csv", neg, pos)
    report, result = run_json(f, *BASE, "--positive", given)
    assert report["positive_label"] == want and type(report["positive_label"]) is type(want)
    assert report["positive_label_source"] == "--positive"
    assert "positive label" not in result.stderr  # no note when the user chose
    assert by_group(report)["north"]["tpr"] == pytest.approx(tpr)


def test_positive_not_a_label(tmp_path: Path) -> None:
    f = labelled(tmp_path, "l.csv", "<=50K", ">50K")
    result = run(f, *BASE, "--positive", ">50k", code=None)
    assert_one_line_error(result, "--positive '>50k'", "not a label value", "'<=50K', '>50K'")


def test_positive_with_multiclass_label(tmp_path: Path) -> None:
    f = write(tmp_path / "m.csv", "y,pred,g\na,a,x\nb,b,x\nc,a,y\nb,c,y\n")
    report, _ = run_json(f, *BASE)
    assert report["task"] == "multiclass" and report["positive_label"] is None
    result = run(f, *BASE, "--positive", "a", code=None)
    assert_one_line_error(result, "--positive applies to a binary label", "3 values")


# ------------------------------------------------------------- debug and exit code 3
def test_no_traceback_without_debug(tmp_path: Path) -> None:
    result = run(tmp_path / "nope.csv", *BASE, code=None)
    assert_one_line_error(result, "no such file")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = run(tmp_path / "nope.csv", *BASE, env={"FAIRFIX_DEBUG": "1"}, code=2)
    assert "Traceback (most recent call last)" in result.stderr
    assert "DataError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("fairfix: error: ")


def test_debug_zero_is_off(tmp_path: Path) -> None:
    result = run(tmp_path / "nope.csv", *BASE, env={"FAIRFIX_DEBUG": "0"}, code=2)
    assert "Traceback" not in result.stderr


def _explode(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("metric engine exploded\non two lines")


def test_unexpected_exception_is_exit_3(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fairfix._audit.build_report", _explode)
    result = run(data / "preds.csv", *BASE, code=3)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "unexpected RuntimeError: metric engine exploded on two lines" in lines[0]
    assert "FAIRFIX_DEBUG=1" in lines[0]
    assert "Traceback" not in result.output


def test_unexpected_exception_with_debug(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fairfix._audit.build_report", _explode)
    result = run(data / "preds.csv", *BASE, env={"FAIRFIX_DEBUG": "1"}, code=3)
    assert "Traceback (most recent call last)" in result.stderr
    assert "_explode" in result.stderr
    assert "set FAIRFIX_DEBUG=1" not in result.stderr  # it is set


# ------------------------------------------------------------------------ colour
def test_force_color_styles_the_table(data: Path) -> None:
    # The check below can fail: with FORCE_COLOR the table does carry escapes.
    result = run(data / "preds.csv", *BASE, "--fail-on", "accuracy<0.9",
                 env={"FORCE_COLOR": "1", "TERM": "xterm-256color"}, code=1)
    assert SGR.search(result.stdout)


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown"])
def test_no_color_means_no_escapes(data: Path, fmt: str) -> None:
    result = run(data / "preds.csv", *BASE, "--format", fmt, "--fail-on", "accuracy<0.9",
                 "--fail-on", "accuracy>0.99", "--min-group-size", "50",
                 env={"FORCE_COLOR": "1", "NO_COLOR": "1", "TERM": "xterm-256color"}, code=1)
    assert "north" in result.stdout
    assert not ANSI.search(result.stdout)
    assert not ANSI.search(result.stderr)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    from fairfix import __version__

    assert result.stdout.strip() == f"fairfix {__version__}"


# ------------------------------------------------------------- the real console script
def _script() -> str:
    found = shutil.which("fairfix", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("the fairfix console script is not installed next to this Python")
    return found


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FAIRFIX_DEBUG", "NO_COLOR", "FORCE_COLOR", "FAIRFIX_NO_PROGRESS")}
    env.update(extra)
    return env


@pytest.mark.parametrize(("extra", "code"), [
    ([], 0),
    (["--fail-on", "worst_group_accuracy<0.6"], 1),
    (["--pred", "prediction"], 2),  # the last --pred wins: no such column
])
def test_console_script_stdin_and_exit_codes(data: Path, extra: list[str], code: int) -> None:
    proc = subprocess.run(
        [_script(), "audit", "-", *BASE, "--format", "json", *extra],
        input=(data / "preds.csv").read_bytes(), capture_output=True, env=_env(), timeout=120,
    )
    assert proc.returncode == code, proc.stderr.decode()
    err = proc.stderr.decode()
    assert "Traceback" not in err
    if code == 2:
        assert proc.stdout == b""
        assert err.splitlines() == ["fairfix: error: <stdin>: no column 'prediction'; "
                                    "columns are: 'id', 'y', 'pred', 'score', 'g', 'sex'"]
    else:
        report = json.loads(proc.stdout)
        assert report["n"] == 80 and report["settings"]["source"] == "<stdin>"
        assert ("gate tripped: worst_group_accuracy<0.6" in err) is (code == 1)


def _run_in_terminal(args: list[str], env: dict[str, str], code: int) -> str:
    """Run a command with stdout and stderr on a pseudo-terminal; return what it printed."""
    pty = pytest.importorskip("pty")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary,
                            env={**env, "TERM": "xterm-256color", "COLUMNS": "120"})
    os.close(secondary)
    out = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(primary)
    text = out.decode(errors="replace")
    assert proc.wait(timeout=120) == code, text
    return text


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_no_color_on_a_terminal(data: Path) -> None:
    args = [_script(), "audit", str(data / "preds.csv"), *BASE, "--fail-on", "accuracy<0.9"]
    assert SGR.search(_run_in_terminal(args, _env(), 1))  # the checks below can fail
    text = _run_in_terminal(args, _env(NO_COLOR="1"), 1)
    assert "north" in text and "gate tripped" in text
    assert not SGR.search(text)  # no colour, bold or italics
    # Left: the progress bar's cursor control on stderr; without it, no escape at all.
    quiet = _run_in_terminal(args, _env(NO_COLOR="1", FAIRFIX_NO_PROGRESS="1"), 1)
    assert "north" in quiet and "\x1b" not in quiet
    # Typer's own usage errors and help, too.
    usage = _run_in_terminal([_script(), "audit", "x.csv", "--label", "y"], _env(NO_COLOR="1"), 2)
    assert "Missing option '--group'" in usage and "\x1b" not in usage
    assert "\x1b" not in _run_in_terminal([_script(), "audit", "--help"], _env(NO_COLOR="1"), 0)


def test_negative_seed_is_a_usage_error(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("y,p,g\n1,1,a\n0,1,b\n1,0,a\n0,0,b\n")
    res = CliRunner().invoke(app, ["audit", str(data), "--label", "y", "--pred", "p", "--group", "g", "--seed", "-3"])
    assert res.exit_code == 2
    assert "--seed -3: must be >= 0" in res.stderr


# -- issue 11: many groups --------------------------------------------------------------------------
def _many_groups(path, n):
    path.write_text("y,p,g\n" + "".join(f"{i % 2},{(i // 3) % 2},z{i}\n" for i in range(n)))


def test_many_small_groups_warn_in_a_few_lines(tmp_path):
    _many_groups(tmp_path / "m.csv", 500)
    res = runner.invoke(app, ["audit", str(tmp_path / "m.csv"), "--label", "y", "--pred", "p", "--group", "g",
                              "--bootstrap", "10", "--format", "json"])
    assert res.exit_code == 0, res.output
    warnings = [ln for ln in res.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 11 and "and 490 more group(s)" in warnings[-1]
    assert sum(g["small"] for g in json.loads(res.stdout)["groups"]) == 500


@pytest.mark.parametrize(("rows", "bootstrap"), [(60, "100000000"), (20000, "1000")])
def test_bootstrap_memory_is_bounded(tmp_path, rows, bootstrap):
    _many_groups(tmp_path / "m.csv", rows)
    res = runner.invoke(app, ["audit", str(tmp_path / "m.csv"), "--label", "y", "--pred", "p", "--group", "g",
                              "--bootstrap", bootstrap, "--format", "json"])
    assert res.exit_code == 2, res.output
    line = res.stderr.strip().splitlines()[-1]
    assert f"--bootstrap {bootstrap} over {rows} group(s) needs about" in line and "GiB" in line
    assert "--bootstrap 0" in line
