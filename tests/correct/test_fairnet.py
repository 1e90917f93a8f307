"""FairNet invariants: gating, frozen base, the guard, bundles."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fairfix.cli import app
from fairfix.correct import CorrectConfig
from fairfix.correct.bundle import save_bundle
from fairfix.correct.gating import lora_layers
from fairfix.correct.run import correct
from fairfix.detect.fit import DetectorConfig
from fairfix.models import load_model
from fairfix.models.tabular import TrainConfig, train_tabular


def make_frame(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Group visible in x1; the label depends on x0 with a group-specific shift."""
    rng = np.random.default_rng(seed)
    g = rng.random(n) < 0.3
    x0 = rng.normal(size=n)
    x1 = rng.normal(size=n) + 2.0 * g
    x2 = rng.normal(size=n)
    logit = 1.5 * x0 - 0.8 * g * x2 + 0.3
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({"x0": x0, "x1": x1, "x2": x2, "cat": rng.choice(["a", "b"], n),
                         "grp": np.where(g, "min", "maj"), "y": np.where(y, "yes", "no")})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    frame = make_frame()
    model, info = train_tabular(frame, label="y", features=["x0", "x1", "x2", "cat"],
                                config=TrainConfig(hidden=[32, 16], epochs=5, seed=0))
    path = tmp_path_factory.mktemp("m") / "model"
    model.save(path, config={"hidden": [32, 16], "dropout": 0.1}, training=info)
    base = load_model(path)
    cfg = CorrectConfig(epochs=2, seed=0, batch_size=128)
    corrected, result = correct(frame, base, label="y", group="grp", minority=["min"],
                                detector_config=DetectorConfig(epochs=5, seed=0), config=cfg)
    return frame, path, corrected, result


@pytest.fixture(scope="module")
def trained_result_pair(trained):
    """The guard's records of the same correction with the plain floor and with a 2-SE margin."""
    frame, path, _, _ = trained
    records = []
    for guard_se in (0.0, 2.0):
        cfg = CorrectConfig(epochs=2, seed=0, batch_size=128, guard_se=guard_se)
        _, result = correct(frame, load_model(path), label="y", group="grp", minority=["min"],
                            detector_config=DetectorConfig(epochs=5, seed=0), config=cfg)
        records.append(result["record"])
    return records


def test_unflagged_rows_are_bit_identical_to_base(trained):
    frame, path, corrected, _ = trained
    base = load_model(path)
    inputs = base.encode(frame)
    with torch.no_grad():
        base_logits = base.forward(inputs)
    logits, risk, flagged = corrected.gated(inputs, mode="detector", tau=0.5)
    assert 0 < flagged.sum() < len(flagged)
    assert torch.equal(logits[torch.as_tensor(~flagged)], base_logits[torch.as_tensor(~flagged)])
    assert not torch.equal(logits[torch.as_tensor(flagged)], base_logits[torch.as_tensor(flagged)])
    np.testing.assert_array_equal(flagged, risk > 0.5)


def test_forced_on_equals_plain_peft_and_off_equals_base(trained):
    frame, path, corrected, _ = trained
    base = load_model(path)
    inputs = base.encode(frame)
    on, _, _ = corrected.gated(inputs, mode="on")
    off, _, _ = corrected.gated(inputs, mode="off")
    with torch.no_grad():
        plain = corrected.base.module(inputs["x"])  # peft layers with the adapter active, no gating
        ref = base.forward(inputs)
    torch.testing.assert_close(on, plain, atol=1e-6, rtol=0)
    assert torch.equal(off, ref)


def test_gating_leaves_no_hooks(trained):
    frame, _, corrected, _ = trained
    inputs = corrected.encode(frame.head(10))
    corrected.gated(inputs)
    for m in corrected.base.module.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_training_touches_only_adapter_parameters(trained):
    _, path, corrected, _ = trained
    base = load_model(path)
    ref = base.module.state_dict()
    got = {k.replace(".base_layer", ""): v for k, v in corrected.base.module.state_dict().items() if "lora_" not in k}
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert torch.equal(got[k], v), k
    assert lora_layers(corrected.base.module)


def test_guard_ships_adapter_off_when_every_tau_loses_accuracy(tmp_path):
    frame = make_frame(seed=1)
    model, info = train_tabular(frame, label="y", features=["x0", "x1", "x2", "cat"],
                                config=TrainConfig(hidden=[32, 16], epochs=5, seed=0))
    # A huge learning rate wrecks the adapter, and tau 0 switches it on for every row:
    # every candidate setting loses accuracy.
    cfg = CorrectConfig(epochs=2, lr=50.0, seed=0, ce_weight=0.0, margin=100.0, tau=0.0)
    corrected, result = correct(frame, model, label="y", group="grp", minority=["min"],
                                detector_config=DetectorConfig(epochs=5, seed=0), config=cfg)
    base_acc = result["record"]["base_validation"]["accuracy"]
    assert result["record"]["sweep"]
    assert all(r["accuracy"] < base_acc and not r["passes_guard"] for r in result["record"]["sweep"])
    assert corrected.enabled is False
    assert result["record"]["guard"]["reason"]
    inputs = model.encode(frame)
    with torch.no_grad():
        assert torch.equal(corrected.forward(inputs), model.forward(inputs))
    # the rejected update is not shipped: even forced on, the adapter changes nothing
    forced, _, _ = corrected.gated(inputs, mode="on")
    torch.testing.assert_close(forced, model.forward(inputs), atol=0, rtol=0)


def test_accuracy_change_is_the_paired_gain_and_its_standard_error():
    from fairfix.correct.plan import accuracy_change

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    base = np.where(rng.random(400) < 0.8, y, 1 - y)
    pred = base.copy()
    flip = rng.choice(400, 40, replace=False)
    pred[flip] = 1 - pred[flip]  # 40 rows change, some right, some wrong
    gain, se = accuracy_change(pred, base, y)
    d = (pred == y).astype(float) - (base == y)
    assert gain == pytest.approx((pred == y).mean() - (base == y).mean(), abs=1e-12)
    assert se == pytest.approx(np.std(d, ddof=1) / np.sqrt(400), rel=1e-12)
    assert accuracy_change(base, base, y) == (0.0, 0.0)  # nothing changed: no noise


def test_guard_margin_only_removes_candidates(trained_result_pair):
    """guard_se > 0 keeps the plain floor and adds a margin: every setting it passes, the
    plain floor passes too; what it chooses passes with its margin to spare."""
    plain, strict = trained_result_pair
    assert [(r["steps"], r["strength"], r["tau"]) for r in plain["sweep"]] == \
        [(r["steps"], r["strength"], r["tau"]) for r in strict["sweep"]]
    for p, s in zip(plain["sweep"], strict["sweep"], strict=True):
        assert p["accuracy"] == s["accuracy"] and p["accuracy_gain_se"] == s["accuracy_gain_se"]
        assert s["passes_guard"] <= p["passes_guard"]
    assert sum(s["passes_guard"] for s in strict["sweep"]) < sum(p["passes_guard"] for p in plain["sweep"])
    chosen = strict["chosen"]
    if chosen is not None:
        assert chosen["accuracy_gain"] - 2.0 * chosen["accuracy_gain_se"] >= -1e-12


def test_bundle_round_trip_and_refuses_other_base(trained, tmp_path):
    frame, path, corrected, result = trained
    out = tmp_path / "bundle"
    save_bundle(out, corrected, result["record"],
                reports={"before": result["before"], "after": result["after"]})
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    loaded = load_model(out)
    p1, e1 = corrected.predict_with_extras(frame)
    p2, e2 = loaded.predict_with_extras(frame)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(e1["corrected"], e2["corrected"])
    # a base whose weights differ (retrained with another seed) is refused
    other, info = train_tabular(frame, label="y", features=["x0", "x1", "x2", "cat"],
                                config=TrainConfig(hidden=[32, 16], epochs=5, seed=1))
    other_path = tmp_path / "other"
    other.save(other_path, config={"hidden": [32, 16], "dropout": 0.1}, training=info)
    manifest = json.loads((out / "fairfix.json").read_text())
    manifest["base_model"]["path"] = str(other_path)
    # keep the manifest hash-consistent: only the base path changed
    (out / "fairfix.json").write_text(json.dumps(manifest))
    data = tmp_path / "d.csv"
    frame.to_csv(data, index=False)
    res = CliRunner().invoke(app, ["predict", str(data), "--model", str(out), "--output", str(tmp_path / "p.csv")])
    assert res.exit_code == 2, res.output
    assert "refusing a different base" in res.stderr
    assert "Traceback" not in res.stderr


def test_predict_with_bundle_adds_risk_and_corrected(trained, tmp_path):
    frame, path, corrected, result = trained
    out = tmp_path / "bundle"
    save_bundle(out, corrected, result["record"], reports={})
    data = tmp_path / "d.parquet"
    frame.to_parquet(data)
    res = CliRunner().invoke(app, ["predict", str(data), "--model", str(out), "--output", str(tmp_path / "p.parquet")])
    assert res.exit_code == 0, res.output
    pred = pd.read_parquet(tmp_path / "p.parquet")
    assert {"row", "score", "pred", "risk", "corrected"} <= set(pred.columns)
    np.testing.assert_array_equal(pred["corrected"].to_numpy(), (pred["risk"] > corrected.tau).to_numpy())


def test_deepcopy_keeps_base_untouched(trained):
    _, path, corrected, _ = trained
    base = load_model(path)
    assert not lora_layers(base.module)
    assert copy.deepcopy(corrected.base.module) is not None
