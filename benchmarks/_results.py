"""Shared by the benchmark scripts: write one section of docs/results.md in place."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def write_section(section: str, text: str, results: Path = RESULTS) -> None:
    """Replace (or append) the ``section`` heading's part of docs/results.md; nothing else is touched."""
    results.parent.mkdir(parents=True, exist_ok=True)
    current = results.read_text() if results.exists() else "# Results\n\n"
    pattern = re.compile(rf"^{re.escape(section)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        new = pattern.sub(lambda _m: text.rstrip("\n") + "\n\n", current, count=1)
    else:
        new = current.rstrip("\n") + "\n\n" + text
    results.write_text(new.rstrip("\n") + "\n")
