"""``fairfix report``: the self-contained HTML page of an audit or a comparison.

The page holds the group names (escaped), the summary numbers, embedded PNG plots
and no URL at all; bad input is exit 2 with one line; matplotlib stays optional
and is never imported by ``fairfix audit``.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import fairfix
from fairfix import errors
from fairfix.cli import app
from fairfix.report.html import MATPLOTLIB_MISSING, load_document, render_html
from fairfix.report.render import fmt_num

from .conftest import audit_dict, frame

runner = CliRunner()
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
ANY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def assert_self_contained(page: str) -> None:
    """No network URL of any kind: nothing to fetch, no script, every src a data: URI."""
    assert "http://" not in page and "https://" not in page
    assert not ANY_URL.search(page), ANY_URL.search(page)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "@import" not in page and "url(" not in page
    for attr in re.findall(r'\b(?:src|href|srcset|action|poster)\s*=\s*"([^"]*)"', page):
        assert attr.startswith("data:"), attr
    assert "default-src 'none'" in page  # the browser refuses to fetch even if we slipped


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in IMG.findall(page)]


@pytest.fixture(scope="module")
def audit_page(audit_doc: dict[str, Any]) -> str:
    return render_html(audit_doc, source="audit.json")


@pytest.fixture(scope="module")
def compare_page(compare_doc: dict[str, Any]) -> str:
    return render_html(compare_doc, source="compare.json")


def test_audit_page(audit_doc: dict[str, Any], audit_page: str) -> None:
    page = audit_page
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert_self_contained(page)
    # Group names, escaped: the raw ones must not appear, not even inside an attribute.
    assert "&lt;b&gt;&amp;co" in page and "<b>&co" not in page
    assert "$x$ &#x27;q&quot;" in page and "'q\"" not in page
    assert "north" in page
    # The summary table: every metric and its value; the per-group table: rates with intervals.
    for key, label in (("worst_group_accuracy", "worst-group accuracy"),
                       ("equalized_odds_difference", "equalized odds difference"),
                       ("demographic_parity_ratio", "demographic parity ratio")):
        assert label in page and fmt_num(audit_doc["summary"][key]) in page
    g = audit_doc["groups"][0]
    assert f"[{g['ci']['tpr'][0]:.3f}, {g['ci']['tpr'][1]:.3f}]" in page
    # One figure of per-group bars, a real PNG.
    images = pngs(page)
    assert len(images) == 1
    assert images[0].startswith(b"\x89PNG\r\n\x1a\n") and len(images[0]) > 5000
    # Gates, with their state.
    assert "equalized_odds_difference&gt;0.1" in page and "TRIPPED" in page


def test_compare_page(compare_doc: dict[str, Any], compare_page: str) -> None:
    page = compare_page
    assert_self_contained(page)
    assert "&lt;b&gt;&amp;co" in page and "<b>&co" not in page
    # Summary before / after / delta.
    for key in ("accuracy", "worst_group_accuracy", "equalized_odds_difference"):
        assert fmt_num(compare_doc["before"]["summary"][key]) in page
        assert fmt_num(compare_doc["after"]["summary"][key]) in page
        assert f"{compare_doc['delta'][key]:+.3f}" in page
    # The detector: TPR, FPR, activation rates (overall and per group).
    assert "<h2>Detector</h2>" in page
    for v in ("0.875", "0.062", "0.312", "0.800"):
        assert v in page
    # Per-group TPR/FPR bars, activation bars, the tau sweep.
    assert "<h2>Tau sweep</h2>" in page and "12 setting(s)" in page
    assert "chosen: epoch 1, strength 1.0" in page
    assert len(pngs(page)) == 3
    # Gates: one passes, one trips.
    assert "delta.worst_group_accuracy&lt;0" in page and "after.accuracy&lt;0.99" in page
    assert page.count("badge tripped") >= 2  # the heading badge and the gate row


def test_compare_without_sweep_or_detector(compare_doc: dict[str, Any]) -> None:
    doc = {k: v for k, v in compare_doc.items() if k not in ("sweep", "chosen", "detector")}
    doc["gates"] = []
    page = render_html(doc)
    assert_self_contained(page)
    assert "Tau sweep" not in page and "<h2>Detector</h2>" not in page
    assert len(pngs(page)) == 1
    assert "No gates" in page


def test_multiclass_and_undefined_rates_render() -> None:
    # A group with positives only: FPR undefined (null in JSON), drawn as "n/a", shown as "-".
    doc = audit_dict({"a": 4, "b": 5}, bootstrap=0)
    doc["groups"][0]["fpr"] = None
    page = render_html(json.loads(json.dumps(doc)))
    assert_self_contained(page)
    assert '<td class="num">-</td>' in page and len(pngs(page)) == 1

    df = frame({"a": 4, "b": 5})
    df["y"] = [i % 3 for i in range(len(df))]
    multi = fairfix.audit(df, label="y", group=["g"], pred="p", bootstrap=0).to_dict()
    page = render_html(multi)
    assert "multiclass" in page and len(pngs(page)) == 1  # accuracy only


def test_library_rejects_other_schemas() -> None:
    with pytest.raises(errors.DataError, match="not a fairfix.audit/1 or fairfix.compare/1"):
        render_html({"schema": "fairfix.detect/1"})
    with pytest.raises(errors.DataError, match="'summary'"):
        render_html({"schema": "fairfix.audit/1", "groups": []})


# ------------------------------------------------------------------------------ CLI

@pytest.mark.parametrize("kind", ["audit", "compare", "bundle"])
def test_cli_writes_the_page(files: dict[str, Path], tmp_path: Path, kind: str) -> None:
    out = tmp_path / f"{kind}.html"
    result = runner.invoke(app, ["report", str(files[kind]), "--html", str(out)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == f"fairfix: wrote {out}\n"
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "&lt;b&gt;&amp;co" in page
    assert ("before and after" in page) == (kind != "audit")
    if kind == "bundle":
        assert "bundle/compare.json" in page


def test_cli_force_overwrites(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    out.write_text("old")
    result = runner.invoke(app, ["report", str(files["audit"]), "--html", str(out)])
    assert result.exit_code == 2 and out.read_text() == "old"
    assert result.stderr == f"fairfix: error: {out}: exists; pass --force to overwrite it\n"
    result = runner.invoke(app, ["report", str(files["audit"]), "--html", str(out), "--force"])
    assert result.exit_code == 0 and "<!DOCTYPE html>" in out.read_text()


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.json", None, "missing.json: no such file"),
    ("bad.json", "{not json", "bad.json: not JSON"),
    ("empty.json", "", "empty.json: not JSON"),
    ("detect.json", json.dumps({"schema": "fairfix.detect/1"}),
     "not a fairfix.audit/1 or fairfix.compare/1 document (schema 'fairfix.detect/1')"),
    ("list.json", "[1, 2]", "(schema None)"),
    ("broken.json", json.dumps({"schema": "fairfix.audit/1", "groups": [], "summary": None}),
     "without a valid 'summary'"),
    ("nobefore.json", json.dumps({"schema": "fairfix.compare/1", "groups": []}),
     "without a valid 'before'"),
    ("nogroup.json", json.dumps({"schema": "fairfix.audit/1", "groups": [{"n": 3}], "summary": {}}),
     "an entry of 'groups' has no 'group' object"),
    ("gates.json", json.dumps({"schema": "fairfix.audit/1", "groups": [], "summary": {},
                               "gates": "x"}), "without a valid 'gates'"),
    ("emptydir", "DIR", "a directory without compare.json"),
])
def test_cli_bad_input_is_exit_2(tmp_path: Path, name: str, content: str | None,
                                 message: str) -> None:
    src = tmp_path / name
    if content == "DIR":
        src.mkdir()
    elif content is not None:
        src.write_text(content)
    out = tmp_path / "out.html"
    result = runner.invoke(app, ["report", str(src), "--html", str(out)])
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("fairfix: error: ") and message in lines[0], lines
    assert not out.exists()


def test_cli_needs_html_option(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["report", str(files["audit"])])
    assert result.exit_code == 2 and "--html" in result.stderr


def test_missing_matplotlib_is_exit_2_with_the_extra(files: dict[str, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    out = tmp_path / "page.html"
    result = runner.invoke(app, ["report", str(files["compare"]), "--html", str(out)])
    assert result.exit_code == 2
    assert result.stderr == f"fairfix: error: {MATPLOTLIB_MISSING}\n"
    assert "pip install 'fairfix[report]'" in result.stderr
    assert not out.exists()


def test_audit_never_imports_matplotlib(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    frame({"a": 4, "b": 5}).to_csv(data, index=False)
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from fairfix.cli import app\n"
        f"r = CliRunner().invoke(app, ['audit', {str(data)!r}, '--label', 'y', '--pred', 'p',"
        " '--group', 'g', '--bootstrap', '0', '--format', 'json'])\n"
        "assert r.exit_code == 0, r.stderr\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_load_document_reads_a_bundle(files: dict[str, Path], compare_doc: dict[str, Any]) -> None:
    assert load_document(files["bundle"])["schema"] == "fairfix.compare/1"
    assert load_document(files["audit"])["schema"] == "fairfix.audit/1"


def test_group_names_matplotlib_cannot_draw_raise_no_warning() -> None:
    """issue 11: CJK, emoji and tabs in group names leaked matplotlib's UserWarning lines to stderr."""
    import logging
    import warnings

    from fairfix.report.html import render_html

    from .conftest import audit_dict

    names = {"北京": 3, "😀 smile": 5, "tab\there": 10}
    doc = audit_dict(names, bootstrap=0)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("matplotlib").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            page = render_html(doc)
    finally:
        logging.getLogger("matplotlib").removeHandler(handler)
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    assert "北京" in page and "😀 smile" in page
