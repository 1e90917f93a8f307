"""Artifact identity and trust: the digest covers the manifest, names stay inside, nothing unlisted loads."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fairfix import errors
from fairfix.artifacts import MANIFEST, digest, read_manifest, sha256_file, write_artifact
from fairfix.cli import app
from fairfix.models import load_model
from fairfix.models.tabular import TrainConfig, train_tabular


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=(n, 2))
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "g": np.where(rng.random(n) < 0.3, "b", "a"),
                         "y": (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int)})


@pytest.fixture
def model_dir(frame, tmp_path):
    model, info = train_tabular(frame, label="y", features=["x0", "x1"],
                                config=TrainConfig(hidden=[8], epochs=1, seed=0))
    out = tmp_path / "model"
    model.save(out, config={"hidden": [8], "dropout": 0.1}, training=info)
    return out


def _edit(path, fn) -> None:
    mf = path / MANIFEST
    manifest = json.loads(mf.read_text())
    fn(manifest)
    mf.write_text(json.dumps(manifest))


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_exit_2(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("fairfix: error")]
    assert len(lines) == 1, res.stderr
    return lines[0]


# -- defect 3: the identity covers the manifest ----------------------------------------------
@pytest.mark.parametrize("edit", [
    lambda m: m.update(classes=m["classes"][::-1]),
    lambda m: m["preprocessing"].update(means=[v * 10 for v in m["preprocessing"]["means"]]),
])
def test_digest_covers_behaviour_changing_config(model_dir, edit):
    before = read_manifest(model_dir)["digest"]
    _edit(model_dir, edit)
    assert read_manifest(model_dir)["digest"] != before  # a bundle made for `before` refuses it


def test_detector_refuses_base_whose_manifest_was_edited(model_dir, frame, tmp_path):
    from fairfix.detect.fit import DetectorConfig, fit_detector, load_detector

    base = load_model(model_dir)
    det = fit_detector(frame, base, group="g", minority=["b"], config=DetectorConfig(epochs=1, seed=0))
    det.save(tmp_path / "det")
    load_detector(tmp_path / "det", base)
    _edit(model_dir, lambda m: m.update(classes=m["classes"][::-1]))
    with pytest.raises(errors.ModelError, match="retrain the detector"):
        load_detector(tmp_path / "det", load_model(model_dir))


def test_unlisted_weights_are_refused(model_dir, tmp_path):
    _edit(model_dir, lambda m: m.update(files={}))
    with pytest.raises(errors.ModelError, match="not listed in"):
        load_model(model_dir)
    pd.DataFrame({"x0": [0.1], "x1": [0.2]}).to_csv(tmp_path / "x.csv", index=False)
    line = _one_line_exit_2(_cli("predict", tmp_path / "x.csv", "--model", model_dir, "--output", tmp_path / "o.csv"))
    assert "model.safetensors" in line and "not listed" in line


def test_nested_manifest_is_listed_and_hashed(tmp_path):
    def write(tmp):
        (tmp / "sub").mkdir()
        (tmp / "sub" / MANIFEST).write_text("{}")
        (tmp / "w.bin").write_bytes(b"x")

    manifest = write_artifact(tmp_path / "a", kind="bundle", schema="s", write_files=write, config={})
    assert set(manifest["files"]) == {"sub/fairfix.json", "w.bin"}
    (tmp_path / "a" / "sub" / MANIFEST).write_text('{"kind": "detector"}')
    with pytest.raises(errors.ModelError, match="sha256 differs"):
        read_manifest(tmp_path / "a")


def test_files_must_be_a_mapping_of_sha256(model_dir):
    _edit(model_dir, lambda m: m.update(files=list(m["files"])))
    with pytest.raises(errors.ModelError, match="'files' must map file names to sha256"):
        read_manifest(model_dir)
    _edit(model_dir, lambda m: m.update(files={"model.safetensors": 7}))
    with pytest.raises(errors.ModelError, match="is not a sha256"):
        read_manifest(model_dir)


# -- defect 4: names stay inside the directory, no symlink is followed -------------------------
@pytest.mark.parametrize("name", ["../../../../etc/hostname", "/etc/hostname", "sub/../../x", "./x", ""])
def test_manifest_names_cannot_leave_the_directory(model_dir, tmp_path, name):
    outside = tmp_path / "x"
    outside.write_text("secret")

    def add(m):
        m["files"][name] = sha256_file(outside)

    _edit(model_dir, add)
    with pytest.raises(errors.ModelError, match="leaves the artifact directory|bad file name"):
        read_manifest(model_dir)


def test_symlinked_weights_are_refused(model_dir, tmp_path):
    weights = model_dir / "model.safetensors"
    target = tmp_path / "elsewhere.safetensors"
    os.replace(weights, target)
    os.symlink(target, weights)
    with pytest.raises(errors.ModelError, match="is a symlink"):
        load_model(model_dir)


def test_new_artifacts_follow_the_umask(model_dir):
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(model_dir.stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((model_dir / "model.safetensors").stat().st_mode) == 0o666 & ~mask


def test_digest_is_stable_across_a_write_and_read(model_dir):
    manifest = read_manifest(model_dir)
    assert manifest["digest"] == digest(json.loads((model_dir / MANIFEST).read_text()))


# -- defect 7: a detector manifest that fairfix did not write is exit 2 ------------------------------
@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.pop("detector"), "no 'detector' mapping"),
    (lambda m: m["detector"].update(extra=1), "unknown key 'extra'"),
    (lambda m: m["detector"].update(dim="wide"), "bad detector manifest"),
    (lambda m: m["config"].update(epochs=0), "bad detector config"),
])
def test_bad_detector_manifest_is_a_model_error(model_dir, frame, tmp_path, edit, message):
    from fairfix.detect.fit import DetectorConfig, fit_detector, load_detector

    base = load_model(model_dir)
    fit_detector(frame, base, group="g", minority=["b"], config=DetectorConfig(epochs=1, seed=0)).save(
        tmp_path / "det")
    _edit(tmp_path / "det", edit)
    with pytest.raises(errors.ModelError, match=message):
        load_detector(tmp_path / "det", base)
