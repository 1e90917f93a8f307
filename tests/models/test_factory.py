"""Factory models: any torch module + a state dict, inputs from numeric columns."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from fairfix import errors
from fairfix.artifacts import digest
from fairfix.models import load_model
from fairfix.models.factory import FactoryModel, load_factory_model

from . import factory_fixture as ff

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MOD = ff.__name__  # importable name under any pytest import mode
FEATURES = ["a", "b", "c"]


def _state(make, seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = make()
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}


def _weights(tmp_path, make=ff.make_mlp, name="w.safetensors", mutate=None):
    state = _state(make)
    if mutate is not None:
        mutate(state)
    path = tmp_path / name
    save_file(state, str(path))
    return path


def _frame(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=FEATURES)
    return frame.assign(g=[i % 2 for i in range(n)])


@pytest.fixture
def mlp(tmp_path) -> FactoryModel:
    model = load_model(_weights(tmp_path), factory=f"{MOD}:make_mlp", features=FEATURES)
    assert isinstance(model, FactoryModel)
    return model


def test_layers_and_representation_shape(mlp):
    assert mlp.kind == "factory"
    assert mlp.classes == [0, 1] and mlp.positive == 1
    assert mlp.input_columns == FEATURES
    assert mlp.linear_layers() == ["0", "2", "4"]
    assert mlp.default_tap_layer == "0"
    assert mlp.default_lora_targets == ["2"]
    inputs = mlp.encode(_frame(5))
    assert inputs["x"].dtype == torch.float32 and inputs["x"].shape == (5, 3)
    rep = mlp.representation(inputs)
    assert rep.values.shape == (5, 8) and rep.mask is None and not rep.is_sequence
    # the hook reads the first linear layer's output
    assert torch.equal(rep.values, mlp.module[0](inputs["x"]))
    proba = mlp.predict_proba(_frame(5))
    assert proba.shape == (5, 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1.0)


def test_save_load_round_trip(mlp, tmp_path):
    frame = _frame(8)
    manifest = mlp.save(tmp_path / "model", config={"note": "x"}, training={"rows": 8})
    assert manifest["model_kind"] == "factory"
    assert manifest["config"]["factory"] == f"{MOD}:make_mlp"
    assert manifest["config"]["features"] == FEATURES
    loaded = load_model(tmp_path / "model", factory=f"{MOD}:make_mlp")
    assert isinstance(loaded, FactoryModel)
    assert loaded.features == FEATURES and loaded.classes == [0, 1] and loaded.positive == 1
    assert loaded.digest == digest(manifest)
    np.testing.assert_allclose(loaded.predict_proba(frame), mlp.predict_proba(frame),
                               atol=1e-6, rtol=0)
    with pytest.raises(errors.OutputExistsError):
        mlp.save(tmp_path / "model")




def test_named_classes_survive_save(tmp_path):
    model = load_factory_model(_weights(tmp_path), f"{MOD}:make_mlp", features="a, b,c",
                               classes=["no", "yes"])
    assert model.features == FEATURES
    assert model.classes == ["no", "yes"] and model.positive == "yes"
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m", factory=f"{MOD}:make_mlp")
    assert loaded.classes == ["no", "yes"] and loaded.positive == "yes"


def test_multiclass_defaults(tmp_path):
    model = load_factory_model(_weights(tmp_path, ff.make_three_class), f"{MOD}:make_three_class",
                               features=FEATURES)
    assert model.classes == [0, 1, 2] and model.positive is None
    assert model.default_tap_layer == "0"
    assert model.default_lora_targets == ["0"]  # nothing between the tap and the head


@pytest.mark.parametrize("make", ["make_logit", "make_squeezed"])
def test_single_logit_is_binary(tmp_path, make):
    model = load_factory_model(_weights(tmp_path, getattr(ff, make)), f"{MOD}:{make}",
                               features=FEATURES)
    assert model.classes == [0, 1] and model.positive == 1
    frame = _frame(4)
    z = model.module(model.encode(frame)["x"]).reshape(-1)
    np.testing.assert_allclose(model.predict_proba(frame)[:, 1], torch.sigmoid(z).detach().numpy(),
                               atol=1e-6)


def test_pt_state_dict_with_weights_only(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(_state(ff.make_mlp), path)
    model = load_factory_model(path, f"{MOD}:make_mlp", features=FEATURES)
    reference = load_factory_model(_weights(tmp_path), f"{MOD}:make_mlp", features=FEATURES)
    frame = _frame(4)
    np.testing.assert_array_equal(model.predict_proba(frame), reference.predict_proba(frame))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _pickled_object(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"0.weight": argparse.Namespace(x=1)}, path)
    return path


BAD = [
    # (case id, how to make the weights path, factory, extra kwargs, expected message part)
    ("truncated", lambda t: _truncated(t), "make_mlp", {}, "not a readable safetensors file"),
    ("missing key", lambda t: _weights(t, mutate=lambda s: s.pop("2.bias")), "make_mlp", {},
     "lacks 1 tensor(s) the model needs, e.g. '2.bias'"),
    ("extra key", lambda t: _weights(t, mutate=lambda s: s.update(extra=torch.zeros(1))),
     "make_mlp", {}, "the model does not, e.g. 'extra'"),
    ("wrong shape",
     lambda t: _weights(t, mutate=lambda s: s.update({"4.weight": torch.zeros(3, 6)})),
     "make_mlp", {}, "tensor '4.weight' has shape (3, 6), the model expects (2, 6)"),
    ("no module", lambda t: _weights(t), "!nosuch_fairfix_pkg.nets:make", {},
     "cannot import factory 'nosuch_fairfix_pkg.nets:make'"),
    ("no function", lambda t: _weights(t), "nope", {}, "cannot import factory"),
    ("no colon", lambda t: _weights(t), "!justamodule", {}, "expected package.module:function"),
    ("not a module", lambda t: _weights(t), "make_not_a_module", {}, "not a torch nn.Module"),
    ("not callable", lambda t: _weights(t), "NOT_CALLABLE", {}, "not a function"),
    ("factory raises", lambda t: _weights(t), "make_broken", {},
     "failed: RuntimeError: no GPU here"),
    ("no features", lambda t: _weights(t), "make_mlp", {"features": None},
     "a factory model needs --features COL,..."),
    ("feature count", lambda t: _weights(t), "make_mlp", {"features": ["a", "b"]},
     "does not run on 2 input column(s)"),
    ("class count", lambda t: _weights(t), "make_mlp", {"classes": ["a", "b", "c"]},
     "3 classes given"),
    ("missing file", lambda t: t / "absent.safetensors", "make_mlp", {}, "no such model file"),
    ("other suffix", lambda t: _weights(t, name="w.npz"), "make_mlp", {},
     "expected a .safetensors"),
    ("pickled object", _pickled_object, "make_mlp", {}, "weights_only=True"),
    ("plain directory", lambda t: t, "make_mlp", {}, "is a directory without fairfix.json"),
]


def _truncated(tmp_path):
    path = _weights(tmp_path)
    _truncate(path)
    return path


@pytest.mark.parametrize(("make_path", "factory", "kwargs", "message"),
                         [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_checkpoints_are_model_errors(tmp_path, make_path, factory, kwargs, message):
    path = make_path(tmp_path)
    factory = factory[1:] if factory.startswith("!") else f"{MOD}:{factory}"
    kw = {"features": FEATURES, **kwargs}
    with pytest.raises(errors.ModelError) as info:
        load_model(path, factory=factory, **kw)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_bare_state_dict_needs_factory(tmp_path):
    with pytest.raises(errors.ModelError, match="needs --factory"):
        load_model(_weights(tmp_path))


def test_tampered_saved_model_is_refused(mlp, tmp_path):
    mlp.save(tmp_path / "m")
    _truncate(tmp_path / "m" / "model.safetensors")
    with pytest.raises(errors.ModelError, match="sha256 differs"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize(("column", "values", "message"), [
    ("b", ["1.5", "x", "2"], "<DataFrame>: column 'b' holds 'x', which is not a number"),
    ("c", [1.0, None, 2.0], "column 'c' has 1 empty or non-finite value(s) (first at row 1)"),
])
def test_bad_values_are_data_errors(mlp, column, values, message):
    frame = _frame(3)
    frame[column] = pd.Series(values, dtype=object if column == "b" else "float64")
    with pytest.raises(errors.DataError) as info:
        mlp.encode(frame)
    assert message in str(info.value)


def test_missing_feature_column_is_data_error(mlp):
    with pytest.raises(errors.DataError, match="no feature column 'c'"):
        mlp.encode(_frame(2).drop(columns="c"))


def test_working_directory_is_not_put_on_sys_path(tmp_path, monkeypatch):
    import sys

    (tmp_path / "fairfix_test_nets.py").write_text(
        "from torch import nn\n\ndef make():\n    return nn.Linear(3, 2)\n"
    )
    state = {"weight": torch.zeros(2, 3), "bias": torch.tensor([0.0, 1.0])}
    save_file(state, str(tmp_path / "w.safetensors"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "fairfix_test_nets", raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    path_before = list(sys.path)
    with pytest.raises(errors.ModelError, match="cannot import factory 'fairfix_test_nets:make'"):
        load_model("w.safetensors", factory="fairfix_test_nets:make", features=FEATURES)
    assert sys.path == path_before
    # on sys.path (installed, or PYTHONPATH) the same module loads
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model("w.safetensors", factory="fairfix_test_nets:make", features=FEATURES)
    assert model.default_tap_layer == "" and model.default_lora_targets == []
    np.testing.assert_allclose(model.predict_proba(_frame(2))[:, 1], 1 / (1 + np.exp(-1.0)))


EVIL = "import os\nos.environ['FAIRFIX_EVIL_RAN'] = '1'\n\ndef make():\n    raise SystemExit(0)\n"


@pytest.mark.parametrize("recorded", ["fairfix_evil_mod:make", "os:abort", "sys:exit", "fairfix.cli:main"])
def test_manifest_factory_is_never_run_without_factory_option(mlp, tmp_path, monkeypatch, recorded):
    """A factory named only by an artifact's manifest is refused (exit 2), never imported or called."""
    import json
    import sys

    from typer.testing import CliRunner

    from fairfix.artifacts import read_manifest
    from fairfix.cli import app

    (tmp_path / "fairfix_evil_mod.py").write_text(EVIL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "fairfix_evil_mod", raising=False)
    monkeypatch.delenv("FAIRFIX_EVIL_RAN", raising=False)
    mlp.save(tmp_path / "m")
    mf = tmp_path / "m" / "fairfix.json"
    manifest = json.loads(mf.read_text())
    manifest["config"]["factory"] = recorded
    mf.write_text(json.dumps(manifest))
    read_manifest(tmp_path / "m")  # still hash-consistent: only the manifest changed
    _frame(4).to_csv(tmp_path / "x.csv", index=False)
    res = CliRunner().invoke(app, ["predict", "x.csv", "--model", "m", "--output", "o.csv"])
    assert res.exit_code == 2, res.output
    assert "not a fairfix built-in" in res.stderr and "pass --factory" in res.stderr
    assert "fairfix_evil_mod" not in sys.modules and "FAIRFIX_EVIL_RAN" not in os.environ
    assert not (tmp_path / "o.csv").exists()


def test_builtin_factory_loads_from_manifest(tmp_path):
    from fairfix.models.factory import check_recorded_factory, is_builtin

    assert is_builtin("fairfix.models.vision:small_cnn")
    assert not is_builtin("fairfix_models.vision:small_cnn") and not is_builtin("fairfix.cli:main")
    assert check_recorded_factory(tmp_path, "fairfix.models.vision:small_cnn")


def test_factory_that_exits_is_a_model_error(tmp_path, monkeypatch):
    import sys

    (tmp_path / "fairfix_exit_mod.py").write_text("def make():\n    raise SystemExit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fairfix_exit_mod", raising=False)
    with pytest.raises(errors.ModelError, match="failed: SystemExit"):
        load_model(_weights(tmp_path), factory="fairfix_exit_mod:make", features=FEATURES)


def test_threshold_on_a_multiclass_model_is_exit_2(tmp_path):
    """issue 11: --threshold was silently ignored for a multiclass model."""
    from typer.testing import CliRunner

    from fairfix.cli import app

    w = _weights(tmp_path, ff.make_three_class)
    frame = _frame(6).assign(y=[0, 1, 2, 0, 1, 2])
    frame.to_csv(tmp_path / "d.csv", index=False)
    base = ["--model", str(w), "--factory", f"{MOD}:make_three_class", "--features", "a,b,c"]
    runner = CliRunner()
    for args in (["audit", str(tmp_path / "d.csv"), "--label", "y", "--group", "g", *base],
                 ["predict", str(tmp_path / "d.csv"), "--output", str(tmp_path / "o.csv"), *base]):
        res = runner.invoke(app, [*args, "--threshold", "0.7"])
        assert res.exit_code == 2, res.output
        assert "--threshold applies to a binary model" in res.stderr and "3 classes" in res.stderr
        assert runner.invoke(app, args).exit_code == 0
