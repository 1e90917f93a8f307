"""The small CNN for ``--factory`` and ERM training of factory modules (library and CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fairfix import errors
from fairfix.cli import app
from fairfix.datasets.digits_color import PIXELS, load_digits_color
from fairfix.models import load_model
from fairfix.models.erm import ErmConfig
from fairfix.models.factory import FactoryModel, train_factory
from fairfix.models.vision import small_cnn
from fairfix.training import expand_columns, select_features

CNN = "fairfix.models.vision:small_cnn"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_digits_color("train").iloc[:400].reset_index(drop=True)


def test_small_cnn_shapes_and_layer_names():
    net = small_cnn()
    x = torch.rand(5, 192)
    assert net(x).shape == (5, 2)
    assert net.features(x.reshape(5, 3, 8, 8)).shape == (5, 16 * 64)
    assert net.fc1(net.features(x.reshape(5, 3, 8, 8))).shape == (5, 64)
    wide = small_cnn(channels=1, size=6, width=4, n_classes=3)
    assert wide(torch.rand(2, 36)).shape == (2, 3)
    model = FactoryModel(net, factory=CNN, features=PIXELS, classes=[0, 1], positive=1)
    assert model.linear_layers() == ["fc1", "fc2", "head"]
    # a CNN: the detector reads the input (colour is plain there), LoRA reaches every conv and linear but the head
    assert model.default_tap_layer == "<input>"
    assert model.default_lora_targets == ["features.0", "features.2", "fc1", "fc2"]
    assert model.head_layer == "head"
    inputs = model.encode(load_digits_color("test").iloc[:7])
    rep = model.representation(inputs)
    assert rep.values.shape == (7, 192) and not rep.is_sequence
    assert torch.equal(rep.values, inputs["x"])  # the raw pixels
    assert model.representation(inputs, "fc1").values.shape == (7, 64)
    assert model.representation(inputs, "features.0").values.shape == (7, 16 * 8 * 8)  # feature maps, flattened


def test_train_factory_is_reproducible_and_leaves_global_rng_alone(digits):
    cfg = ErmConfig(epochs=2, batch_size=64, seed=3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, info = train_factory(digits, label="label", features=PIXELS, factory=CNN, config=cfg)
    assert torch.equal(torch.rand(3), expected)  # no global seeding leaked out
    b, _ = train_factory(digits, label="label", features=PIXELS, factory=CNN, config=cfg)
    for (ka, va), (kb, vb) in zip(a.module.state_dict().items(), b.module.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert info["epochs_run"] == 2 and info["train_rows"] + info["val_rows"] == len(digits)
    assert a.classes == [0, 1] and a.positive == 1 and not a.module.training
    c, _ = train_factory(digits, label="label", features=PIXELS, factory=CNN,
                         config=ErmConfig(epochs=2, batch_size=64, seed=4))
    assert not torch.equal(a.module.fc1.weight, c.module.fc1.weight)


def test_single_logit_factory_trains_as_binary(digits):
    model, _ = train_factory(digits, label="label", features=["p0", "p1", "p2"],
                             factory="tests.models.factory_fixture:make_logit",
                             config=ErmConfig(epochs=1, seed=0))
    assert model.single_logit and model.classes == [0, 1]
    assert model.predict_proba(digits.iloc[:4]).shape == (4, 2)


def test_factory_outputs_must_fit_the_classes(digits):
    with pytest.raises(errors.UsageError, match="2 output"):
        train_factory(digits, label="digit", features=PIXELS, factory=CNN, config=ErmConfig(epochs=1))


def test_feature_globs():
    cols = ["image", "label", "p0", "p1", "p10", "q"]
    assert expand_columns(cols, "p*") == ["p0", "p1", "p10"]
    assert expand_columns(cols, ["q", "p1*", "p1"]) == ["q", "p1", "p10"]
    assert select_features(cols, label="label", features="p?") == ["p0", "p1"]
    with pytest.raises(errors.DataError, match="pattern 'z\\*'"):
        expand_columns(cols, ["z*"])
    with pytest.raises(errors.DataError, match="'zz'"):
        select_features(cols, label="label", features=["zz"])


def test_cli_train_factory_then_predict(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cnn"
    res = runner.invoke(app, ["train", "digits_color:train", "--label", "label", "--factory", CNN,
                              "--features", "p*", "--epochs", "1", "--out", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["kind"] == "factory" and len(summary["features"]) == 192
    manifest = json.loads((out / "fairfix.json").read_text())
    assert manifest["config"]["factory"] == CNN and manifest["config"]["epochs"] == 1
    assert manifest["training"]["data"] == {"source": "digits_color:train", "sha256": None, "rows": 1200}
    model = load_model(out)
    assert model.kind == "factory" and model.default_tap_layer == "<input>"
    test = load_digits_color("test")
    proba = model.predict_proba(test)
    assert proba.shape == (len(test), 2) and np.allclose(proba.sum(1), 1)
    res = runner.invoke(app, ["train", "digits_color:train", "--label", "label", "--factory", CNN,
                              "--text-column", "x", "--base-model", str(tmp_path), "--out",
                              str(tmp_path / "x")])
    assert res.exit_code == 2 and "different model kinds" in res.stderr
