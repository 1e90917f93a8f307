"""The HTML report in headless Chromium: it renders, and the page makes no network request.

Runs scripts/screenshot_report.py (a screenshot run and a --dump-dom run, each with a
net log).  Skipped where /usr/bin/chromium is absent (Debian: apt-get install chromium).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from fairfix.report.html import render_html

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshot_report.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def shot() -> Any:
    spec = importlib.util.spec_from_file_location("screenshot_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_renders_offline_in_chromium(shot: Any, compare_doc: dict[str, Any],
                                            tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(compare_doc, source="compare.json"), encoding="utf-8")
    png = tmp_path / "report.png"
    netlogs = tmp_path / "netlogs"
    summary = shot.check_page(page, png, chromium=str(CHROMIUM), expect="before and after",
                              netlog_dir=netlogs)
    assert summary["ok"], json.dumps(summary, indent=2)
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
    assert summary["dom_has_expected_text"]
    # Both net logs were read, and nothing in them came from the page.
    assert summary["netlogs_read"] == 2 and sorted(p.name for p in netlogs.iterdir()) == [
        "netlog-dom.json", "netlog-screenshot.json"]
    assert summary["page_requests"] == [] and summary["csp_refusals"] == []
    # Whatever http(s) request the logs hold is Chromium's own (no initiator), never the page's.
    for log in netlogs.iterdir():
        for req in shot.url_requests(shot.read_netlog(log)):
            if req["url"].startswith(("http:", "https:", "ws:", "wss:")):
                assert not req["from_page"] and req["initiator"] == "not an origin", req


def test_the_check_catches_a_page_that_fetches(shot: Any, tmp_path: Path) -> None:
    # The negative control: without it, a check that never finds anything would pass too.
    page = tmp_path / "fetches.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8">'
                    '<link rel="stylesheet" href="https://fairfix.invalid/x.css"></head>'
                    '<body><h1>fairfix</h1><img src="http://fairfix.invalid/x.png"></body></html>')
    summary = shot.check_page(page, tmp_path / "fetches.png", chromium=str(CHROMIUM))
    assert not summary["ok"]
    assert summary["page_requests"] == ["http://fairfix.invalid/x.png",
                                        "https://fairfix.invalid/x.css"]
