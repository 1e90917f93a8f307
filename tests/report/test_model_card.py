"""``fairfix report SOURCE --model-card README.md``: read back with huggingface_hub's ModelCard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fairfix.cli import app
from fairfix.report.model_card import BEGIN, END, YAML_BEGIN_PREFIX, YAML_END

hub = pytest.importorskip("huggingface_hub")  # the hf extra
runner = CliRunner()

CARD = """---
license: apache-2.0
tags:
- tabular-classification   # a comment that must survive
library_name: fairfix
---

# income-mlp

A model card someone wrote, with *their* words.

## Training

Trained on Adult.
"""


def card_run(source: Path, card: Path, *extra: str, code: int = 0) -> Any:
    res = runner.invoke(app, ["report", str(source), "--model-card", str(card), *extra])
    assert res.exit_code == code, (res.exit_code, res.stderr, res.exception)
    return res


def eval_results(card: Path) -> dict[str, Any]:
    loaded = hub.ModelCard.load(card)
    return {r.metric_type: r for r in loaded.data.eval_results or []}


def outside(text: str) -> str:
    """The card with fairfix's two marked blocks cut out."""
    a, b = text.index(BEGIN), text.index(END) + len(END)
    text = text[:a] + text[b:]
    a, b = text.index(YAML_BEGIN_PREFIX), text.index(YAML_END)
    return text[:a] + text[text.index("\n", b) + 1:]  # the end marker's line, whatever its line ending


def test_new_card_from_an_audit(files: dict[str, Path], audit_doc: dict[str, Any], tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    res = card_run(files["audit"], card, "--model-name", "my-model")
    assert f"wrote {card}" in res.stderr
    loaded = hub.ModelCard.load(card)
    assert loaded.data.model_name == "my-model"
    got = eval_results(card)
    assert got["accuracy"].metric_value == pytest.approx(audit_doc["summary"]["accuracy"], abs=1e-6)
    assert got["worst_group_accuracy"].metric_value == pytest.approx(
        audit_doc["summary"]["worst_group_accuracy"], abs=1e-6)
    assert got["accuracy"].task_type == "tabular-classification"
    text = card.read_text()
    assert BEGIN in text and END in text
    for g in audit_doc["groups"]:  # each group with its accuracy interval
        lo, hi = g["ci"]["accuracy"]
        assert f"{g['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]" in text
    assert "`equalized_odds_difference>0.1`" in text
    assert "TRIPPED" in text or "passed" in text


def test_update_in_place_keeps_every_byte_outside_the_markers(files: dict[str, Path], tmp_path: Path,
                                                              compare_doc: dict[str, Any]) -> None:
    card = tmp_path / "README.md"
    card.write_text(CARD)
    res = card_run(files["audit"], card)
    assert f"updated {card}" in res.stderr
    first = card.read_text()
    # the first write appends the section after a blank line, and the results at the end of the metadata
    assert first.endswith(END + "\n") and outside(first) == CARD + "\n\n"
    assert first.startswith(CARD.split("---\n\n")[0])  # the user's metadata lines come first, unchanged
    meta = hub.ModelCard.load(card).data
    assert meta.license == "apache-2.0" and meta.tags == ["tabular-classification"]
    # the user writes on after the section; a second update (now from a bundle) replaces fairfix's blocks only
    edited = first + "\n## Limitations\n\nTheirs.\n"
    card.write_text(edited)
    card_run(files["bundle"], card)
    second = card.read_text()
    assert outside(second) == outside(edited)
    got = eval_results(card)
    assert got["worst_group_accuracy"].metric_value == pytest.approx(
        compare_doc["after"]["summary"]["worst_group_accuracy"], abs=1e-6)
    assert len(hub.ModelCard.load(card).data.eval_results) == 2  # replaced, not appended
    # the same update twice changes nothing
    card_run(files["bundle"], card)
    assert card.read_text() == second


def test_bundle_card_shows_detector_and_before_after(files: dict[str, Path], compare_doc: dict[str, Any],
                                                     tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card_run(files["bundle"], card)
    text = card.read_text()
    det = compare_doc["detector"]
    assert "### Bias detector" in text
    assert f"| {compare_doc['tau']:.3f} | {det['tpr']:.3f} | {det['fpr']:.3f} |" in text
    assert "### Correction: before and after" in text
    b, a = compare_doc["before"]["summary"]["accuracy"], compare_doc["after"]["summary"]["accuracy"]
    assert f"| accuracy | {b:.3f} | {a:.3f} | {a - b:+.3f} |" in text
    assert "`delta.worst_group_accuracy<0`" in text
    assert hub.ModelCard.load(card).data.model_name == "bundle"  # the bundle's folder name


def test_crlf_card_keeps_its_bytes(files: dict[str, Path], tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    original = CARD.replace("\n", "\r\n").encode()
    card.write_bytes(original)
    card_run(files["audit"], card)
    text = card.read_bytes().decode()
    assert outside(text).encode() == original + b"\r\n\r\n"  # a blank line, and the line end after the section
    assert "\n" not in text.replace("\r\n", "")  # what fairfix wrote follows the card's line endings
    assert eval_results(card)["accuracy"]


def test_card_with_its_own_model_index_is_merged(files: dict[str, Path], tmp_path: Path) -> None:
    own = ("---\nlicense: mit\nmodel-index:\n- name: theirs\n  results:\n  - task: {type: text-classification}\n"
           "    dataset: {name: imdb, type: imdb}\n    metrics:\n    - {type: f1, value: 0.9}\n---\nBody.\n")
    card = tmp_path / "README.md"
    card.write_text(own)
    res = card_run(files["audit"], card)
    assert "written again" in res.stderr
    got = eval_results(card)
    assert got["f1"].metric_value == 0.9 and "worst_group_accuracy" in got
    assert hub.ModelCard.load(card).data.model_name == "theirs"
    assert card.read_text().endswith("---\nBody.\n\n" + card.read_text().split("---\nBody.\n\n", 1)[1])
    card_run(files["audit"], card)  # again: fairfix's results replaced, the others kept
    assert sorted(r.metric_type for r in hub.ModelCard.load(card).data.eval_results) == [
        "accuracy", "f1", "worst_group_accuracy"]


def test_html_and_card_together(files: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    card, page = tmp_path / "README.md", tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(files["audit"]), "--html", str(page), "--model-card", str(card)])
    assert res.exit_code == 0, res.stderr
    assert page.read_text().startswith("<!DOCTYPE html>") and BEGIN in card.read_text()


def one_line_error(res: Any, *fragments: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fairfix: error: "), lines
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_card_in_a_missing_folder_is_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    card = tmp_path / "nope" / "README.md"
    one_line_error(card_run(files["audit"], card, code=2), str(card), "does not exist")


def test_card_that_is_a_directory_is_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    one_line_error(card_run(files["audit"], tmp_path, code=2), str(tmp_path), "is a directory")


def test_card_in_an_unwritable_folder_is_exit_2(files: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import fairfix.report.io as fio

    def denied(*args: Any, **kwargs: Any) -> Any:  # the folder refuses new files (even to root)
        raise PermissionError(errno.EACCES, "Permission denied")

    card = tmp_path / "README.md"
    card.write_text(CARD)
    monkeypatch.setattr(fio.tempfile, "mkstemp", denied)
    one_line_error(card_run(files["audit"], card, code=2), str(card), "Permission denied")
    assert card.read_text() == CARD


def test_unbalanced_markers_are_exit_2_and_leave_the_card(files: dict[str, Path], tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    text = CARD + f"\n{BEGIN}\nhalf a section\n"
    card.write_text(text)
    one_line_error(card_run(files["audit"], card, code=2), str(card), "fairfix:fairness:end")
    assert card.read_text() == text


def test_not_an_audit_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"schema": "other/1"}))
    one_line_error(card_run(bad, tmp_path / "README.md", code=2), str(bad), "other/1")
    assert not (tmp_path / "README.md").exists()


def test_report_needs_an_output(files: dict[str, Path]) -> None:
    res = runner.invoke(app, ["report", str(files["audit"])])
    one_line_error(res, "--html", "--model-card")
