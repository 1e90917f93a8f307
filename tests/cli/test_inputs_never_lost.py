"""Inputs are never lost and hostile artifacts are refused before any work (issue 20, defects 1-4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fairfix.cli import app
from tests.cli.frames import small_frame
from tests.cli.test_audit_cli import assert_one_line_error

runner = CliRunner()


def _frame(n: int = 240) -> pd.DataFrame:
    return small_frame(n, seed=0)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A table, a model, a detector and a bundle, made once."""
    root = tmp_path_factory.mktemp("issue20")
    _frame().to_csv(root / "d.csv", index=False)
    res = runner.invoke(app, ["train", str(root / "d.csv"), "--label", "y", "--features", "x0,x1", "--epochs", "2",
                              "--hidden", "16,8", "--out", str(root / "model"), "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["detect", str(root / "d.csv"), "--model", str(root / "model"), "--group", "g",
                              "--minority", "b", "--epochs", "2", "--out", str(root / "det"), "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["correct", str(root / "d.csv"), "--model", str(root / "model"), "--label", "y",
                              "--group", "g", "--detector", str(root / "det"), "--epochs", "1",
                              "--out", str(root / "bundle"), "--quiet"])
    assert res.exit_code == 0, res.output
    return root


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _correct(made: Path, out: Path, *extra: str) -> list[str]:
    return ["correct", str(made / "d.csv"), "--model", str(made / "model"), "--label", "y", "--group", "g",
            "--epochs", "1", "--out", str(out), "--quiet", *extra]


def test_correct_out_over_its_base_model_is_refused_and_the_model_kept(made: Path) -> None:
    before = _tree(made / "model")
    res = runner.invoke(app, _correct(made, made / "model", "--force"))
    assert_one_line_error(res, str(made / "model"), "holds the input", "--force will not replace an input")
    assert _tree(made / "model") == before


def test_correct_out_over_its_detector_is_refused_and_the_detector_kept(made: Path) -> None:
    before = _tree(made / "det")
    res = runner.invoke(app, _correct(made, made / "det", "--detector", str(made / "det"), "--force"))
    assert_one_line_error(res, str(made / "det"), "holds the input")
    assert _tree(made / "det") == before


def test_correct_out_over_its_eval_table_folder_is_refused(made: Path, tmp_path: Path) -> None:
    shutil.copytree(made / "bundle", tmp_path / "b")  # a bundle that happens to hold the --eval table
    _frame(60).to_csv(tmp_path / "b" / "eval.csv", index=False)
    res = runner.invoke(app, _correct(made, tmp_path / "b", "--eval", str(tmp_path / "b" / "eval.csv"), "--force"))
    assert_one_line_error(res, "holds the input", "eval.csv")
    assert (tmp_path / "b" / "eval.csv").is_file()


def test_correct_output_may_not_be_its_data(made: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    shutil.copy(made / "d.csv", data)
    res = runner.invoke(app, ["correct", str(data), "--model", str(made / "model"), "--label", "y", "--group", "g",
                              "--out", str(tmp_path / "b"), "--output", str(data), "--force"])
    assert_one_line_error(res, "is the input")
    assert data.read_bytes() == (made / "d.csv").read_bytes()


def test_correct_model_that_is_a_bundle_names_the_base_to_pass(made: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, _correct(made, tmp_path / "b2") + ["--model", str(made / "bundle")])
    line = assert_one_line_error(res, f"--model {made / 'bundle'}", "is a FairNet bundle",
                                 "pass the bundle's base model")
    assert str(made / "model") in line
    assert not (tmp_path / "b2").exists()


def test_a_bundle_whose_base_is_itself_is_exit_2_not_a_recursion(made: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "loop"
    shutil.copytree(made / "bundle", bundle)
    mf = bundle / "fairfix.json"
    manifest = json.loads(mf.read_text())
    manifest["base_model"]["path"] = str(bundle)  # what `correct --out BASE --force` used to leave behind
    mf.write_text(json.dumps(manifest))
    res = runner.invoke(app, ["predict", str(made / "d.csv"), "--model", str(bundle), "-o", str(tmp_path / "p.csv")])
    assert_one_line_error(res, str(bundle), "is itself a FairNet bundle")
    assert not (tmp_path / "p.csv").exists()


def _hostile(made: Path, tmp_path: Path, kind: str, edit) -> Path:  # noqa: ANN001 - a small lambda
    target = tmp_path / kind
    shutil.copytree(made / kind, target)
    mf = target / "fairfix.json"
    manifest = json.loads(mf.read_text())
    edit(manifest)
    mf.write_text(json.dumps(manifest))
    return target


@pytest.fixture
def no_real_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test (instead of the machine) if a module is built off the meta device with a hostile width."""
    from torch import nn

    real = nn.Linear.__init__

    def guarded(self, in_features, out_features, *args, **kwargs):  # noqa: ANN001, ANN202
        if max(in_features, out_features) >= 100_000 and torch.get_default_device().type != "meta":
            raise AssertionError(f"allocated a Linear({in_features}, {out_features}) from a manifest's figure")
        real(self, in_features, out_features, *args, **kwargs)

    monkeypatch.setattr(nn.Linear, "__init__", guarded)


def test_hostile_model_manifest_widths_are_checked_against_the_weights_before_allocating(
        made: Path, tmp_path: Path, no_real_allocation: None) -> None:
    model = _hostile(made, tmp_path, "model", lambda m: m["architecture"].update(hidden=[100000, 100000]))
    res = runner.invoke(app, ["predict", str(made / "d.csv"), "--model", str(model), "-o", str(tmp_path / "p.csv")])
    assert_one_line_error(res, str(model / "model.safetensors"), "the model expects (100000, 2)")


def test_hostile_detector_manifest_width_is_checked_against_the_weights_before_allocating(
        made: Path, tmp_path: Path, no_real_allocation: None) -> None:
    det = _hostile(made, tmp_path, "det", lambda m: m["detector"].update(hidden=100000))
    res = runner.invoke(app, _correct(made, tmp_path / "b", "--detector", str(det)))
    assert_one_line_error(res, str(det), "detector.safetensors", "100000")


def test_hostile_adapter_rank_is_checked_against_the_weights_before_peft_allocates(
        made: Path, tmp_path: Path, no_real_allocation: None) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(made / "bundle", bundle)
    cfg = bundle / "adapter" / "adapter_config.json"
    config = json.loads(cfg.read_text())
    config["r"] = 100000
    cfg.write_text(json.dumps(config))
    manifest = json.loads((bundle / "fairfix.json").read_text())  # a consistent, hostile bundle: hashes match
    from fairfix.artifacts import sha256_file

    manifest["files"]["adapter/adapter_config.json"] = sha256_file(cfg)
    (bundle / "fairfix.json").write_text(json.dumps(manifest))
    res = runner.invoke(app, ["predict", str(made / "d.csv"), "--model", str(bundle), "-o", str(tmp_path / "p.csv")])
    assert_one_line_error(res, str(cfg), "rank 100000", "refusing before allocating")
