"""``fairfix export``: a gate-``all`` bundle merged into a plain model directory of its base's kind.

The oracle is the bundle itself: ``fairfix predict`` with the merged directory gives the bundle's
predictions to float rounding (and not the base's), on a tabular MLP and on the packaged MiniLM
fine-tuned for two steps, whose merged directory ``AutoModelForSequenceClassification`` loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairfix.cli import app
from tests.cli.test_audit_cli import assert_one_line_error

from .bundles import arm, build, build_text, predict_cli, runner


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tabular model corrected on 400 Adult rows: ``bundle`` (gate detector) and ``all`` (gate all), both on."""
    root = build(tmp_path_factory.mktemp("export"))
    shutil.copytree(root / "bundle", root / "off")  # as the guard shipped it: adapter off
    arm(root / "bundle", gate="detector", tau=0.5)
    shutil.copytree(root / "bundle", root / "all")
    arm(root / "all", gate="all", seed=1)
    return root


def test_merged_tabular_export_predicts_as_the_bundle(tabular: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    res = runner.invoke(app, ["export", str(tabular / "all"), "--out", str(out)])
    assert res.exit_code == 0, (res.stderr, res.exception)
    assert f"wrote {out}" in res.stderr
    rows = tabular / "rows.csv"
    bundle = predict_cli(tabular / "all", rows, tmp_path / "b.parquet")
    merged = predict_cli(out, rows, tmp_path / "m.parquet")
    base = predict_cli(tabular / "model", rows, tmp_path / "base.parquet")
    assert bundle["corrected"].all()  # gate all: the adapter on for every row
    assert list(merged.columns) == ["row", "score", "pred"]  # a plain model: no risk, no gate
    np.testing.assert_allclose(merged["score"], bundle["score"], atol=1e-6, rtol=0)
    assert (merged["pred"] == bundle["pred"]).all()
    assert np.abs(merged["score"] - base["score"]).max() > 1e-2  # the correction is in the weights
    manifest = json.loads((out / "fairfix.json").read_text())
    src = json.loads((tabular / "all" / "fairfix.json").read_text())
    from fairfix.artifacts import digest

    assert manifest["model_kind"] == "tabular_mlp" and "README.md" in manifest["files"]
    assert set(manifest["files"]) == {"README.md", "model.safetensors"}
    assert manifest["merged_from"]["bundle_sha256"] == digest(src)
    assert manifest["merged_from"]["adapter_files"]["adapter/adapter_model.safetensors"] == \
        src["files"]["adapter/adapter_model.safetensors"]
    assert manifest["preprocessing"] == json.loads((tabular / "model" / "fairfix.json").read_text())["preprocessing"]
    card = (out / "README.md").read_text()
    assert "## Merged export" in card and digest(src) in card and "<!-- fairfix:fairness:begin -->" in card
    assert src["files"]["adapter/adapter_model.safetensors"] in card and src["base_model"]["sha256"] in card


@pytest.mark.parametrize(("name", "fragments"), [
    ("bundle", ["gate detector, tau 0.5", "cannot be merged", "fairfix correct --mlflow",
                "fairfix.mlflow.log_model"]),
    ("off", ["the guard shipped the adapter off", "nothing to merge", "fairfix correct --mlflow"]),
])
def test_a_bundle_that_is_not_gate_all_cannot_be_merged(tabular: Path, tmp_path: Path, name: str,
                                                        fragments: list[str]) -> None:
    res = runner.invoke(app, ["export", str(tabular / name), "--out", str(tmp_path / "merged")])
    assert_one_line_error(res, str(tabular / name), *fragments)
    assert not (tmp_path / "merged").exists()


def test_several_attributes_cannot_be_merged() -> None:
    from fairfix import errors
    from fairfix.export import check_mergeable

    manifest = {"adapter_enabled": True, "gate": "all",
                "attributes": [{"group": "sex", "gate": "all"}, {"group": "race", "gate": "detector"}]}
    with pytest.raises(errors.UsageError, match=r"several attributes \(sex: gate all, race: gate detector\).*"
                                                r"fairfix\.mlflow\.log_model"):
        check_mergeable("b", manifest)


def test_out_that_is_or_lies_in_the_bundle_is_refused_and_nothing_lost(tabular: Path, tmp_path: Path) -> None:
    work = tmp_path / "all"
    shutil.copytree(tabular / "all", work)
    before = _tree(work)
    res = runner.invoke(app, ["export", str(work), "--out", str(work)])
    assert_one_line_error(res, str(work), "exists")
    res = runner.invoke(app, ["export", str(work), "--out", str(work), "--force"])
    assert_one_line_error(res, str(work), "holds the input", "--force will not replace an input")
    res = runner.invoke(app, ["export", str(work), "--out", str(work / "merged")])
    assert_one_line_error(res, str(work / "merged"), "lies inside the input")
    res = runner.invoke(app, ["export", str(work), "--out", str(tabular / "model"), "--force"])
    assert_one_line_error(res, str(tabular / "model"), "holds the input")
    assert _tree(work) == before
    res = runner.invoke(app, ["export", str(tabular / "model"), "--out", str(tmp_path / "x")])
    assert_one_line_error(res, "is a fairfix model, not a bundle")
    # the bundle still loads: nothing was added to it
    predict_cli(work, tabular / "rows.csv", tmp_path / "p.csv")
    # --force replaces an earlier export
    assert runner.invoke(app, ["export", str(work), "--out", str(tmp_path / "m")]).exit_code == 0
    res = runner.invoke(app, ["export", str(work), "--out", str(tmp_path / "m")])
    assert_one_line_error(res, "exists")
    assert runner.invoke(app, ["export", str(work), "--out", str(tmp_path / "m"), "--force"]).exit_code == 0


# -- a Hugging Face base ----------------------------------------------------------------------


def test_merged_minilm_export_is_a_hugging_face_directory(tmp_path: Path) -> None:
    build_text(tmp_path)
    arm(tmp_path / "bundle", gate="all", scale=0.05)
    out = tmp_path / "merged"
    res = runner.invoke(app, ["export", str(tmp_path / "bundle"), "--out", str(out)])
    assert res.exit_code == 0, (res.stderr, res.exception)
    rows = tmp_path / "rows.csv"
    bundle = predict_cli(tmp_path / "bundle", rows, tmp_path / "b.parquet")
    merged = predict_cli(out, rows, tmp_path / "m.parquet")
    base = predict_cli(tmp_path / "model", rows, tmp_path / "base.parquet")
    np.testing.assert_allclose(merged["score"], bundle["score"], atol=1e-5, rtol=0)
    assert (merged["pred"] == bundle["pred"]).all()
    assert np.abs(merged["score"] - base["score"]).max() > 1e-3
    files = set(json.loads((out / "fairfix.json").read_text())["files"])
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    # a plain Hugging Face directory: transformers loads it alone, no fairfix, no peft
    import torch
    import transformers

    from fairfix.models import load_model
    from fairfix.models.offline import hub_offline

    with hub_offline():
        hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(out), local_files_only=True)
    assert not any("lora" in name for name, _ in hf.named_parameters())
    frame = pd.read_csv(rows)
    inputs = load_model(out).encode(frame)
    with torch.no_grad():
        proba = torch.softmax(hf.eval()(**inputs).logits, dim=-1)[:, 1].numpy()
    np.testing.assert_allclose(proba, bundle["score"], atol=1e-5, rtol=0)
