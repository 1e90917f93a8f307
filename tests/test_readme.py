"""The README's "From Python" section runs: its python blocks, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start:end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)


def test_the_from_python_section_runs(tmp_path, monkeypatch, capsys):
    blocks = python_blocks("From Python")
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)  # it writes model/, bundle/ and estimator-bundle/
    namespace: dict = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "bundle" / "fairfix.json").is_file()
    assert (tmp_path / "estimator-bundle" / "fairfix.json").is_file()
    preds = namespace["preds"]
    assert list(preds.columns) == ["row", "income", "sex", "score", "pred", "risk", "corrected"]
    assert namespace["clf"].evidence_["kind"] == "cross-fit"
    assert "worst_group_accuracy" in capsys.readouterr().out
