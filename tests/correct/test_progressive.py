"""Progressive correction of several attributes: stacked gate, guard over every attribute, bundle, CLI."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fairfix import errors
from fairfix.cli import app
from fairfix.correct import CorrectConfig
from fairfix.correct.bundle import save_progressive_bundle
from fairfix.correct.fairnet import fit_fairnet, group_codes
from fairfix.correct.gating import lora_layers
from fairfix.correct.progressive import adapter_name, correct_many
from fairfix.detect.fit import DetectorConfig, fit_detector
from fairfix.models import load_model
from fairfix.models.tabular import TrainConfig, train_tabular


def make_frame(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    """Two attributes, each visible in its own feature, each shifting the label differently."""
    rng = np.random.default_rng(seed)
    g = rng.random(n) < 0.3
    h = rng.random(n) < 0.4
    x0, x2 = rng.normal(size=n), rng.normal(size=n)
    x1 = rng.normal(size=n) + 2.0 * g
    x3 = rng.normal(size=n) - 1.5 * h
    logit = 1.5 * x0 - 0.8 * g * x2 + 0.7 * h * x2 + 0.3
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({"x0": x0, "x1": x1, "x2": x2, "x3": x3, "grp": np.where(g, "min", "maj"),
                         "h": np.where(h, "b", "a"), "y": np.where(y, "yes", "no")})


FAST = {"epochs": 2, "seed": 0, "batch_size": 128}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    frame = make_frame()
    model, info = train_tabular(frame, label="y", features=["x0", "x1", "x2", "x3"],
                                config=TrainConfig(hidden=[32, 16], epochs=5, seed=0))
    path = tmp_path_factory.mktemp("m") / "model"
    model.save(path, config={"hidden": [32, 16], "dropout": 0.1}, training=info)
    part = frame.copy()
    part.loc[part.index[::2], "h"] = None  # attribute h half labelled: partial mode
    corrected, result = correct_many(part, load_model(path), label="y", groups=["grp", "h"],
                                     detector_configs=[DetectorConfig(epochs=5, seed=0, mode="full"),
                                                       DetectorConfig(epochs=5, seed=0, mode="partial")],
                                     config=CorrectConfig(**FAST))
    return frame, path, corrected, result


def _armed(corrected):
    """A copy with both adapters on at a median tau and non-zero random updates (exercises every row pattern)."""
    cm = copy.deepcopy(corrected)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in lora_layers(cm.base.module):
            for name in layer.lora_B:
                w = layer.lora_B[name].weight
                w.copy_(torch.randn(w.shape, generator=gen) * 0.2)
    inputs = cm.encode(make_frame())
    _, risks, _ = cm.gated(inputs)
    for a, r in zip(cm.attributes, risks, strict=True):
        a.enabled, a.gate, a.tau = True, "detector", float(np.median(r))
    return cm, inputs


def test_fit_order_modes_and_named_adapters(fitted):
    _, _, corrected, result = fitted
    assert [a.group for a in corrected.attributes] == ["grp", "h"]
    assert [a.adapter for a in corrected.attributes] == [adapter_name(0, "grp"), adapter_name(1, "h")]
    assert [a.detector.mode for a in corrected.attributes] == ["full", "partial"]
    names = {n for layer in lora_layers(corrected.base.module) for n in layer.lora_A}
    assert names == {a.adapter for a in corrected.attributes}
    doc = result["compare"]
    assert doc["before"]["group_columns"] == ["grp", "h"]  # the intersection
    assert [a["group"] for a in doc["attributes"]] == ["grp", "h"]
    assert doc["attributes"][1]["fitted_on"] == "model corrected for grp"
    for a in doc["attributes"]:
        assert set(a["before"]) >= {"accuracy", "worst_group_accuracy"} and "detector" in a


def test_rows_flagged_by_no_detector_are_bit_identical_to_the_base(fitted):
    _, path, corrected, _ = fitted
    cm, inputs = _armed(corrected)
    with torch.no_grad():
        base_logits = load_model(path).forward(inputs)
    logits, _, flags = cm.gated(inputs)
    none = ~(flags[0] | flags[1])
    assert 0 < none.sum() < len(none) and (flags[0] & flags[1]).any()
    idx = torch.as_tensor(none)
    assert torch.equal(logits[idx], base_logits[idx])
    assert not torch.equal(logits[~idx], base_logits[~idx])


def test_one_pass_equals_peft_with_each_rows_adapters_active(fitted):
    """The reference: peft's own forward with the row's set of adapters active, one set at a time."""
    _, _, corrected, _ = fitted
    cm, inputs = _armed(corrected)
    logits, _, flags = cm.gated(inputs)
    names = [a.adapter for a in cm.attributes]
    tuner = cm.peft_model.base_model
    for pattern in itertools.product([False, True], repeat=2):
        rows = np.flatnonzero((flags[0] == pattern[0]) & (flags[1] == pattern[1]))
        assert len(rows), pattern
        part = {k: v[torch.as_tensor(rows)] for k, v in inputs.items()}
        active = [n for n, on in zip(names, pattern, strict=True) if on]
        with torch.no_grad():
            if active:
                tuner.set_adapter(active)
                ref = cm.base.forward(part)
            else:
                with cm.peft_model.disable_adapter():
                    ref = cm.base.forward(part)
        torch.testing.assert_close(logits[torch.as_tensor(rows)], ref, rtol=1e-5, atol=1e-5)


def test_guard_rejects_settings_that_drop_another_attributes_worst_cell(fitted):
    """A guard attribute made of the rows the base gets right (others unknown): any flipped row drops it."""
    frame, path, _, _ = fitted
    base = load_model(path)
    from fairfix.data.labels import encode_labels

    cfg = CorrectConfig(**FAST)
    tr, va = np.arange(0, 900), np.arange(900, len(frame))
    y = encode_labels(frame["y"], base.classes)
    det = fit_detector(frame.iloc[tr], base, group="grp", minority=["min"], label="y",
                       config=DetectorConfig(epochs=5, seed=0))
    right = base.predict_proba(frame).argmax(1) == y
    codes = np.where(right, 0, -1)
    g_all, _ = group_codes(list(frame["grp"]))
    minority = (frame["grp"] == "min").astype(int).to_numpy()
    data = {"inputs": base.encode(frame), "y": y, "group": g_all, "minority": minority,
            "guard_groups": {"right": codes}}
    cfg = CorrectConfig(epochs=2, seed=0, batch_size=128, guard_se=0.0, max_accuracy_drop=0.5)
    _, record = fit_fairnet(base, det, data, cfg, split=(tr, va), adapter="fairnet_0_grp")
    assert record["guard"]["attribute_worst_group_accuracy_before"] == {"right": 1.0}
    floor = record["guard"]["floor"]
    dropped = [r for r in record["sweep"] if r["attribute_worst_group_accuracy"]["right"] < 1.0
               and r["accuracy"] >= floor]
    assert dropped, "the test needs settings that flip rows the base got right"
    assert not any(r["passes_guard"] for r in dropped)
    assert all(r["attribute_worst_group_accuracy"]["right"] == 1.0 for r in record["sweep"] if r["passes_guard"])


def test_chosen_settings_keep_every_other_attribute(fitted):
    _, _, _, result = fitted
    for rec in result["records"]:
        before = rec["guard"]["attribute_worst_group_accuracy_before"]
        assert len(before) == 1
        if rec["chosen"] is not None:
            for name, value in rec["chosen"]["attribute_worst_group_accuracy"].items():
                assert value >= before[name] - 1e-12


def test_bundle_adapters_load_with_plain_peft_and_fairfix(fitted, tmp_path):
    from peft import PeftModel

    frame, path, corrected, result = fitted
    out = tmp_path / "bundle"
    save_progressive_bundle(out, corrected, config={"label": "y", "group": ["grp", "h"]},
                            reports={"compare": result["compare"]})
    manifest = json.loads((out / "fairfix.json").read_text())
    names = [a["adapter"] for a in manifest["attributes"]]
    assert [a["group"] for a in manifest["attributes"]] == ["grp", "h"]
    for n in names:
        for f in (f"adapter/{n}/adapter_config.json", f"adapter/{n}/adapter_model.safetensors",
                  f"detectors/{n}/fairfix.json", f"prototypes/{n}.safetensors"):
            assert f in manifest["files"], f
    # plain peft: the first adapter by from_pretrained, the next by load_adapter
    module = load_model(path).module
    pm = PeftModel.from_pretrained(module, str(out / "adapter" / names[0]), adapter_name=names[0])
    pm.load_adapter(str(out / "adapter" / names[1]), adapter_name=names[1])
    want = {k: v for k, v in corrected.base.module.state_dict().items() if "lora_" in k}
    got = {k: v for k, v in pm.base_model.model.state_dict().items() if "lora_" in k}
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    # fairfix: the same predictions
    loaded = load_model(out)
    p0, e0 = corrected.predict_with_extras(frame)
    p1, e1 = loaded.predict_with_extras(frame)
    np.testing.assert_array_equal(p0, p1)
    np.testing.assert_array_equal(e0["corrected"], e1["corrected"])
    assert set(e1) == {"corrected", "risk_grp", "corrected_grp", "risk_h", "corrected_h"}


def test_bundle_digest_covers_the_new_files_and_fields(fitted, tmp_path):
    _, _, corrected, _ = fitted
    out = tmp_path / "bundle"
    save_progressive_bundle(out, corrected, config={}, reports={})
    digest = load_model(out).digest
    mf = out / "fairfix.json"
    manifest = json.loads(mf.read_text())
    manifest["attributes"][1]["tau"] = 0.123
    mf.write_text(json.dumps(manifest))
    assert load_model(out).digest != digest  # the attribute's gate is part of the identity
    manifest["attributes"][1]["adapter"] = "../x"
    mf.write_text(json.dumps(manifest))
    with pytest.raises(errors.ModelError, match=r"attributes\[1\]: bad 'adapter'"):
        load_model(out)
    name = corrected.attributes[1].adapter
    for member in (f"prototypes/{name}.safetensors", f"adapter/{name}/adapter_model.safetensors",
                   f"detectors/{name}/detector.safetensors"):
        save_progressive_bundle(out, corrected, config={}, reports={}, force=True)
        p = out / member
        data = bytearray(p.read_bytes())
        data[-1] ^= 1
        p.write_bytes(bytes(data))
        with pytest.raises(errors.ModelError, match="sha256|hash|changed"):
            load_model(out)


@pytest.fixture(scope="module")
def workspace(fitted, tmp_path_factory):
    frame, path, _, _ = fitted
    d = tmp_path_factory.mktemp("ws")
    frame.to_csv(d / "train.csv", index=False)
    return d, path


@pytest.mark.parametrize("args, message", [
    (["--group", "grp", "--group", "grp"], "--group 'grp' is given twice"),
    (["--group", "grp", "--group", "nope"], "--group: no column 'nope'"),
    (["--group", "grp", "--group", "h", "--mode", "full", "--mode", "none", "--mode", "full"],
     "--mode: 3 value(s) for 2 --group"),
    (["--group", "grp", "--mode", "full", "--mode", "none"], "--mode: 2 values for one --group"),
    (["--group", "grp", "--group", "h", "--minority", "min"], "--minority 'min': with several --group"),
    (["--group", "grp", "--group", "h", "--detector", "x"], "--detector: with several --group"),
])
def test_bad_multi_attribute_input_exits_2_with_one_line(workspace, args, message):
    d, path = workspace
    res = CliRunner().invoke(app, ["correct", str(d / "train.csv"), "--model", str(path), "--label", "y",
                                   "--out", str(d / "never"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert not (d / "never").exists()


def test_cli_corrects_two_attributes_and_predicts(workspace):
    d, path = workspace
    out = d / "bundle"
    res = CliRunner().invoke(app, ["correct", str(d / "train.csv"), "--model", str(path), "--label", "y",
                                   "--group", "grp", "--group", "h", "--mode", "full", "--mode", "none",
                                   "--minority", "grp=min", "--epochs", "2", "--out", str(out), "--format", "json",
                                   "--output", str(d / "cmp.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads((d / "cmp.json").read_text())
    assert doc["schema"] == "fairfix.compare/1" and doc["before"]["group_columns"] == ["grp", "h"]
    assert [a["group"] for a in doc["attributes"]] == ["grp", "h"]
    assert doc["attributes"][0]["detector"]["minority"] == ["min"]
    assert doc["attributes"][1]["detector"]["mode"] == "none"
    res = CliRunner().invoke(app, ["predict", str(d / "train.csv"), "--model", str(out),
                                   "--output", str(d / "pred.csv")])
    assert res.exit_code == 0, res.output
    pred = pd.read_csv(d / "pred.csv")
    assert {"risk_grp", "corrected_grp", "risk_h", "corrected_h", "corrected"} <= set(pred.columns)
    from fairfix.report.compare import render_compare
    from fairfix.report.render import Format

    md = render_compare(doc, Format.markdown)
    assert "| attribute | accuracy | worst-group accuracy |" in md and "| grp |" in md and "| h |" in md
    res = CliRunner().invoke(app, ["report", str(out), "--html", str(d / "r.html")])
    assert res.exit_code == 0, res.output
    assert "<h2>Per attribute</h2>" in (d / "r.html").read_text()


def test_first_attribute_validates_on_the_single_attribute_split(fitted):
    """The split is stratified by the label and the first group: the rows `correct --group grp` validates on,
    whatever the other attributes' labels (a base trained off those rows stays off them)."""
    from fairfix.correct.run import correct

    frame, path, _, result = fitted
    _, single = correct(frame, load_model(path), label="y", group="grp",
                        detector_config=DetectorConfig(epochs=5, seed=0), config=CorrectConfig(**FAST))
    assert result["records"][0]["base_validation"] == single["record"]["base_validation"]
    assert result["compare"]["audited_rows"]["all"] == single["after"]["n"]
