"""CI reports: ``--junit`` (validated against the JUnit XSD) and ``audit --baseline`` gates on deltas."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fairfix.cli import app

from .test_audit_cli import BASE, COLUMNS, assert_one_line_error, csv_text, make_rows

xmlschema = pytest.importorskip("xmlschema")  # the dev extra installs it
XSD = Path(__file__).resolve().parents[1] / "report" / "junit-10.xsd"
runner = CliRunner()


@pytest.fixture(scope="module")
def schema() -> Any:
    return xmlschema.XMLSchema(str(XSD))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """preds.csv (the audit tests' rows) and worse.csv, where 8 of south's right answers turn wrong."""
    d = tmp_path_factory.mktemp("ci")
    rows = make_rows()
    (d / "preds.csv").write_text(csv_text(rows, COLUMNS))
    worse = [dict(r) for r in rows]
    flipped = 0
    for r in worse:
        if r["g"] == "south" and r["y"] == r["pred"] and flipped < 8:
            r["pred"] = 1 - r["pred"]
            flipped += 1
    (d / "worse.csv").write_text(csv_text(worse, COLUMNS))
    return d


def invoke(*args: Any, code: int | None = None) -> Any:
    res = runner.invoke(app, [*map(str, args)])
    if code is not None:
        assert res.exit_code == code, (res.exit_code, res.stderr, res.exception)
    return res


def cases(xml_path: Path) -> dict[str, ET.Element]:
    root = ET.parse(xml_path).getroot()
    return {c.get("name"): c for c in root.iter("testcase")}


def test_audit_junit_is_valid_and_matches_the_json(data: Path, tmp_path: Path, schema: Any) -> None:
    junit = tmp_path / "gates.xml"
    report = tmp_path / "audit.json"
    gates = ["worst_group_accuracy<0.6", "equalized_odds_difference>0.5", "accuracy<0.74"]
    res = invoke("audit", data / "preds.csv", "--label", "y", "--group", "g", "--pred", "pred",
                 "--bootstrap", "200", *[x for g in gates for x in ("--fail-on", g)],
                 "--junit", junit, "--output", report, code=1)
    assert f"wrote {junit}" in res.stderr
    schema.validate(str(junit))
    doc = json.loads(report.read_text())
    by_expr = {g["expr"]: g for g in doc["gates"]}
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "3" and root.get("tests") == "3"
    assert suite.get("failures") == str(sum(g["tripped"] for g in doc["gates"]))
    got = cases(junit)
    assert set(got) == set(gates)
    for expr, case in got.items():
        g = by_expr[expr]
        lo, hi = doc["summary_ci"][g["metric"]]
        failure, skipped = case.find("failure"), case.find("skipped")
        text = ET.tostring(case, encoding="unicode")
        assert f"{g['value']:.4g}" in text and f"[{lo:.4g}, {hi:.4g}]" in text, text
        if g["tripped"]:
            assert failure is not None and skipped is None
            assert failure.get("type") == "gate_tripped"
        elif g["insufficient_evidence"]:
            assert skipped is not None and skipped.get("type") == "insufficient_evidence"
            assert all(r in skipped.get("message", "") for r in g["reasons"])
        else:
            assert failure is None and skipped is None
    # worst-group accuracy 0.5 trips; accuracy 0.75 passes 0.74 with the threshold inside its interval
    assert by_expr["worst_group_accuracy<0.6"]["tripped"]
    assert not by_expr["accuracy<0.74"]["tripped"] and by_expr["accuracy<0.74"]["insufficient_evidence"]
    assert suite.get("skipped") == str(sum(g["insufficient_evidence"] and not g["tripped"] for g in doc["gates"]))


def test_audit_junit_without_gates_is_an_empty_valid_suite(data: Path, tmp_path: Path, schema: Any) -> None:
    junit = tmp_path / "j.xml"
    invoke("audit", data / "preds.csv", *BASE, "--junit", junit, "--format", "json", code=0)
    schema.validate(str(junit))
    assert ET.parse(junit).getroot().get("tests") == "0"


def test_junit_is_not_overwritten_without_force(data: Path, tmp_path: Path) -> None:
    junit = tmp_path / "j.xml"
    junit.write_text("old\n")
    res = invoke("audit", data / "preds.csv", *BASE, "--junit", junit)
    assert_one_line_error(res, str(junit), "--force")
    assert junit.read_text() == "old\n"
    invoke("audit", data / "preds.csv", *BASE, "--junit", junit, "--force", "--format", "json", code=0)
    assert junit.read_text().startswith("<?xml")


def test_junit_that_is_the_output_file_is_exit_2(data: Path, tmp_path: Path) -> None:
    same = tmp_path / "r.txt"
    res = invoke("audit", data / "preds.csv", *BASE, "--junit", same, "--output", same)
    assert_one_line_error(res, "--junit", "--output")
    assert not same.exists()


def test_junit_in_a_missing_folder_is_exit_2(data: Path, tmp_path: Path) -> None:
    res = invoke("audit", data / "preds.csv", *BASE, "--junit", tmp_path / "nope" / "j.xml")
    assert_one_line_error(res, "nope")


def audit_json(data: Path, tmp_path: Path, name: str, csv: str, *extra: str) -> Path:
    out = tmp_path / name
    invoke("audit", data / csv, *BASE, "--format", "json", "--output", out, *extra, code=0)
    return out


def test_baseline_gate_trips_on_a_regression(data: Path, tmp_path: Path, schema: Any) -> None:
    before = audit_json(data, tmp_path, "before.json", "preds.csv")
    junit = tmp_path / "j.xml"
    res = invoke("audit", data / "worse.csv", *BASE, "--baseline", before, "--format", "json",
                 "--fail-on", "delta.worst_group_accuracy<-0.01", "--fail-on", "before.accuracy<0.5",
                 "--fail-on", "worst_group_accuracy<0.1", "--junit", junit, code=1)
    doc = json.loads(res.stdout)
    base = json.loads(before.read_text())
    gates = {g["expr"]: g for g in doc["gates"]}
    want = doc["summary"]["worst_group_accuracy"] - base["summary"]["worst_group_accuracy"]
    assert want < -0.01
    assert gates["delta.worst_group_accuracy<-0.01"]["value"] == pytest.approx(want)
    assert gates["delta.worst_group_accuracy<-0.01"]["tripped"]
    assert gates["before.accuracy<0.5"]["value"] == pytest.approx(base["summary"]["accuracy"])
    assert not gates["before.accuracy<0.5"]["tripped"]
    assert not gates["worst_group_accuracy<0.1"]["tripped"]
    assert doc["baseline"]["source"] == str(before)
    change = doc["summary"]["accuracy"] - base["summary"]["accuracy"]
    assert doc["baseline"]["delta"]["accuracy"] == pytest.approx(change)
    assert "gate tripped: delta.worst_group_accuracy<-0.01" in res.stderr
    schema.validate(str(junit))
    got = cases(junit)
    assert got["delta.worst_group_accuracy<-0.01"].find("failure") is not None
    assert got["before.accuracy<0.5"].find("failure") is None


def test_baseline_gate_passes_without_regression(data: Path, tmp_path: Path) -> None:
    before = audit_json(data, tmp_path, "before.json", "preds.csv")
    res = invoke("audit", data / "preds.csv", *BASE, "--baseline", before, "--format", "json",
                 "--fail-on", "delta.worst_group_accuracy<-0.01", code=0)
    (gate,) = json.loads(res.stdout)["gates"]
    assert gate["value"] == 0 and not gate["tripped"]


def test_delta_gate_without_baseline_is_exit_2(data: Path) -> None:
    res = invoke("audit", data / "preds.csv", *BASE, "--fail-on", "delta.accuracy<0")
    assert_one_line_error(res, "delta.accuracy<0", "--baseline")


def test_unknown_delta_metric_is_exit_2(data: Path, tmp_path: Path) -> None:
    before = audit_json(data, tmp_path, "before.json", "preds.csv")
    res = invoke("audit", data / "preds.csv", *BASE, "--baseline", before, "--fail-on", "delta.nope<0")
    assert_one_line_error(res, "delta.nope", "unknown metric")


@pytest.mark.parametrize("content, fragment", [
    ("not json", "not JSON"),
    ('{"schema": "fairfix.compare/1"}', "not a fairfix.audit/1 document"),
    ("[1, 2]", "not a fairfix.audit/1 document"),
    ('{"schema": "fairfix.audit/1"}', "without 'summary'"),
])
def test_bad_baseline_file_is_exit_2(data: Path, tmp_path: Path, content: str, fragment: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    res = invoke("audit", data / "preds.csv", *BASE, "--baseline", bad, "--fail-on", "delta.accuracy<0")
    assert_one_line_error(res, str(bad), fragment)


def test_missing_baseline_file_is_exit_2(data: Path, tmp_path: Path) -> None:
    res = invoke("audit", data / "preds.csv", *BASE, "--baseline", tmp_path / "gone.json")
    assert_one_line_error(res, "gone.json", "--baseline")


def test_baseline_with_other_group_columns_is_exit_2(data: Path, tmp_path: Path) -> None:
    before = audit_json(data, tmp_path, "before.json", "preds.csv", "--group", "sex")
    res = invoke("audit", data / "preds.csv", *BASE, "--baseline", before, "--fail-on", "delta.accuracy<0")
    lines = res.stderr.splitlines()
    assert res.exit_code == 2 and lines[-1].startswith("fairfix: error: --baseline")
    assert "different columns" in lines[-1] and str(before) in lines[-1]


def test_compare_junit(data: Path, tmp_path: Path, schema: Any) -> None:
    before = audit_json(data, tmp_path, "before.json", "preds.csv")
    after = audit_json(data, tmp_path, "after.json", "worse.csv")
    junit = tmp_path / "cmp.xml"
    invoke("compare", before, after, "--fail-on", "delta.worst_group_accuracy<0", "--fail-on", "after.accuracy<0.1",
           "--format", "json", "--junit", junit, code=1)
    schema.validate(str(junit))
    got = cases(junit)
    assert got["delta.worst_group_accuracy<0"].find("failure") is not None
    assert got["after.accuracy<0.1"].find("failure") is None
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "1" and root.find("testsuite").get("name") == "fairfix compare"
