"""No module in fairfix/ or benchmarks/ over ~600 lines unless its docstring says why it is one module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 600


def test_long_modules_say_why_they_are_one() -> None:
    unexplained = []
    for path in sorted([*ROOT.glob("fairfix/**/*.py"), *ROOT.glob("benchmarks/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        n = text.count("\n")
        if n <= LIMIT:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "One module" not in doc:
            unexplained.append(f"{rel} ({n} lines)")
    assert not unexplained, (f"over {LIMIT} lines without a 'One module ... on purpose' note in the docstring: "
                             + ", ".join(unexplained))
