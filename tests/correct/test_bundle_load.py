"""Loading a bundle: offline only, its manifest's fields checked, its base's manifest in the identity."""

from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fairfix.cli import app

runner = CliRunner()


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    grp = np.where(rng.random(n) < 0.3, "min", "maj")
    x = rng.normal(size=(n, 3))
    y = ((x[:, 0] + np.where(grp == "min", -0.8, 0.4) * x[:, 1]) > 0).astype(int)
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "grp": grp, "y": y})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    _frame(600, 0).to_csv(d / "train.csv", index=False)
    res = runner.invoke(app, ["train", str(d / "train.csv"), "--label", "y", "--group", "grp",
                              "--out", str(d / "model"), "--epochs", "2", "--hidden", "16,8"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["correct", str(d / "train.csv"), "--model", str(d / "model"), "--label", "y",
                              "--group", "grp", "--minority", "min", "--epochs", "1", "--out", str(d / "bundle")])
    assert res.exit_code == 0, res.output
    return d


@pytest.fixture
def ws(built, tmp_path):
    shutil.copytree(built, tmp_path / "w")
    d = tmp_path / "w"
    bundle = json.loads((d / "bundle" / "fairfix.json").read_text())
    bundle["base_model"]["path"] = str(d / "model")
    (d / "bundle" / "fairfix.json").write_text(json.dumps(bundle))
    return d


def _edit(path, fn):
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


def _predict(d):
    return runner.invoke(app, ["predict", str(d / "train.csv"), "--model", str(d / "bundle"),
                               "--output", str(d / "p.csv")])


def _exit_2_line(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("fairfix: error")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_bundle_loads(ws):
    res = _predict(ws)
    assert res.exit_code == 0, res.output


def test_bundle_without_adapter_never_reaches_the_network(ws, monkeypatch):
    calls = []

    def no_network(self, *args, **kwargs):
        calls.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    shutil.rmtree(ws / "bundle" / "adapter")
    _edit(ws / "bundle" / "fairfix.json",
          lambda m: m.update(files={k: v for k, v in m["files"].items() if not k.startswith("adapter/")}))
    line = _exit_2_line(_predict(ws))
    assert "adapter" in line
    assert calls == []


def test_adapter_is_loaded_offline(ws, monkeypatch):
    """peft is called with local_files_only inside hub_offline (its hub fallback is off)."""
    import huggingface_hub.constants as hub_constants
    import peft

    seen = {}
    real = peft.PeftModel.from_pretrained

    def spy(*args, **kwargs):
        seen["local_files_only"] = kwargs.get("local_files_only")
        seen["offline"] = hub_constants.HF_HUB_OFFLINE
        return real(*args, **kwargs)

    monkeypatch.setattr(peft.PeftModel, "from_pretrained", spy)
    assert _predict(ws).exit_code == 0
    assert seen == {"local_files_only": True, "offline": True}


def test_base_whose_manifest_was_edited_is_refused(ws):
    _edit(ws / "model" / "fairfix.json", lambda m: m.update(classes=m["classes"][::-1]))
    assert "refusing a different base" in _exit_2_line(_predict(ws))


def test_edited_nested_detector_manifest_is_refused(ws):
    _edit(ws / "bundle" / "detector" / "fairfix.json", lambda m: m["detector"].update(tau=0.01))
    line = _exit_2_line(_predict(ws))
    assert "detector/fairfix.json" in line and "sha256 differs" in line


@pytest.mark.parametrize(("key", "value"), [("tau", "0.5"), ("tap_layer", 3), ("adapter_enabled", "yes"),
                                            ("base_model", ["x"]), ("gate", "sometimes")])
def test_bad_bundle_fields_are_exit_2(ws, key, value):
    _edit(ws / "bundle" / "fairfix.json", lambda m: m.update({key: value}))
    line = _exit_2_line(_predict(ws))
    assert key in line and "fairfix.json" in line


def test_bad_tap_layer_names_the_bundle(ws):
    _edit(ws / "bundle" / "fairfix.json", lambda m: m.update(tap_layer="blocks.9"))
    line = _exit_2_line(_predict(ws))
    assert "bundle" in line and "blocks.9" in line and "train.csv" not in line
