"""One-pass gated inference for every model kind (DESIGN.md section 1, step 4).

The tabular kind is covered end to end in ``test_fairnet.py``; these tests check the
same invariants on a Hugging Face sequence classifier (a tiny random BERT built from
a config) and on a user factory module:

- rows that are not flagged get logits bit-identical to the base model's;
- with the adapter forced on for every row the gated pass equals a plain peft
  forward with the adapter active; forced off it equals the base;
- training touches only the adapter's parameters (base and head byte for byte);
- the LoRA layers (the kind's default targets) run after the tap layer, and a
  LoRA layer that runs before it is refused;
- the detector gates rows of a token-sequence tap ``(B, T, D)`` with the
  attention mask (padding does not change a row's risk).

The pieces are built directly (detector, then ``fit_fairnet`` for a few steps on a
few rows); the LoRA ``B`` matrices, which start at zero, are then set to seeded
random values so that the adapter changes the flagged rows measurably.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fairfix.correct.fairnet import CorrectConfig, fit_fairnet, group_codes, minority_codes
from fairfix.correct.gating import ADAPTER, gated_forward, lora_layers
from fairfix.correct.loop import Rows, train_steps
from fairfix.data.labels import encode_labels
from fairfix.detect.fit import DetectorConfig, fit_detector
from fairfix.models import load_model
from fairfix.models.base import INPUT

KINDS = ("hf", "factory", "cnn")


# -- model kinds --------------------------------------------------------------------------

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "film", "movie", "was",
         "very", "good", "bad", "great", "awful", "plot", "acting", "##s"]
MAJ_WORDS = ["the", "film", "was", "good", "plot"]
MIN_WORDS = ["a", "movie", "very", "awful", "acting"]


def text_frame(n: int, seed: int) -> pd.DataFrame:
    """Texts of 1..12 words (so batches carry padding); the group shows in the word choice."""
    rng = np.random.default_rng(seed)
    g = rng.random(n) < 0.35
    texts, ys = [], []
    for is_min in g:
        words = list(rng.choice(MIN_WORDS if is_min else MAJ_WORDS, size=rng.integers(1, 13)))
        if rng.random() < 0.5:
            words.append("great")
        texts.append(" ".join(words))
        ys.append(int("great" in words) if rng.random() < 0.85 else int(rng.random() < 0.5))
    return pd.DataFrame({"text": texts, "grp": np.where(g, "min", "maj"), "y": ys})


def tiny_bert(path):
    import transformers

    cfg = transformers.BertConfig(
        vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = transformers.BertForSequenceClassification(cfg)
    module.save_pretrained(path)
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(path)
    return path


N_FEATURES = 4
FEATURES = [f"x{i}" for i in range(N_FEATURES)]


def make_factory_mlp() -> nn.Module:
    """Tap at "0" (first linear), LoRA on "2", head "4"."""
    return nn.Sequential(nn.Linear(N_FEATURES, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 2))


def numeric_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.random(n) < 0.3
    x = rng.normal(size=(n, N_FEATURES))
    x[:, 1] += 2.0 * g
    y = rng.random(n) < 1 / (1 + np.exp(-(1.5 * x[:, 0] - 0.8 * g * x[:, 2])))
    return pd.DataFrame(x, columns=FEATURES).assign(grp=np.where(g, "min", "maj"), y=y.astype(int))


@dataclass
class Setup:
    kind: str
    base: Any  # the base model, never adapted
    corrected: Any  # CorrectedModel after fit_fairnet (one epoch) + random LoRA B
    detector: Any
    frame: pd.DataFrame
    inputs: dict[str, torch.Tensor]
    base_state: dict[str, torch.Tensor]  # the base's state dict before fit_fairnet
    lora_b_trained: bool  # some LoRA B entry moved off zero during training


def digits_frame(n: int) -> pd.DataFrame:
    """Coloured digits (192 pixel columns); the minority is the red images."""
    from fairfix.datasets.digits_color import load_digits_color

    frame = load_digits_color("train").iloc[:n]
    return frame.assign(grp=np.where(frame["colour"] == "red", "min", "maj"), y=frame["label"])


def _build(kind: str, tmp) -> Setup:
    if kind == "hf":
        model = load_model(tiny_bert(tmp / "bert"), text_column="text")
        frame = text_frame(240, seed=0)
    elif kind == "cnn":  # the digits CNN: tap at the input, LoRA on two Conv2d and two Linear layers
        from fairfix.datasets.digits_color import PIXELS
        from fairfix.models.vision import small_cnn

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            state = {k: v.contiguous() for k, v in small_cnn().state_dict().items()}
        save_file(state, str(tmp / "w.safetensors"))
        model = load_model(tmp / "w.safetensors", factory="fairfix.models.vision:small_cnn", features=PIXELS)
        frame = digits_frame(300)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            state = {k: v.contiguous() for k, v in make_factory_mlp().state_dict().items()}
        save_file(state, str(tmp / "w.safetensors"))
        model = load_model(tmp / "w.safetensors", factory=f"{__name__}:make_factory_mlp",
                           features=FEATURES)
        frame = numeric_frame(400, seed=0)
    assert model.kind == ("hf_sequence_classification" if kind == "hf" else "factory")
    base_state = {k: v.detach().clone() for k, v in model.module.state_dict().items()}

    detector = fit_detector(frame, model, group="grp", minority=["min"],
                            config=DetectorConfig(epochs=4, seed=0))
    y = encode_labels(frame["y"], model.classes)
    minority = minority_codes(frame["grp"].tolist(), ["min"])
    groups, _ = group_codes(frame["grp"].tolist())
    data = {"inputs": model.encode(frame), "y": y, "minority": minority, "group": groups}
    config = CorrectConfig(steps=4, eval_every=2, rank=4, batch_size=64, train_on="minority", folds=2, seed=0)
    corrected, _ = fit_fairnet(model, detector, data, config, checkpoint=tmp / "ckpt")

    # the step loop on the shipped adapter's layers (a bundle the guard turned down ships B = 0): it moves B
    work = copy.deepcopy(corrected.base)
    params = [p for _, p in work.module.named_parameters() if p.requires_grad]
    start = {k: v.clone() for k, v in work.module.state_dict().items() if "lora_" in k}
    mine = np.flatnonzero(minority == 1)
    train_steps(work, work.forward, params, start, data["inputs"], torch.as_tensor(y),
                Rows(mine, y[mine], np.ones(len(mine), bool)), corrected.prototypes["reference"], config,
                steps=3, seed=0)
    trained = any(bool(p.abs().sum() > 0) for n, p in work.module.named_parameters() if "lora_B" in n)
    for k, v in work.module.state_dict().items():  # the loop moved no base weight either
        if "lora_" not in k:
            assert torch.equal(v, corrected.base.module.state_dict()[k]), k
    lora_b = [p for n, p in corrected.base.module.named_parameters() if "lora_B" in n]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lora_b:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return Setup(kind, model, corrected, detector, frame, model.encode(frame), base_state, trained)


@pytest.fixture(scope="module", params=KINDS)
def setup(request, tmp_path_factory) -> Setup:
    if request.param == "hf":
        pytest.importorskip("transformers")
    return _build(request.param, tmp_path_factory.mktemp(request.param))


def _base_logits(s: Setup) -> torch.Tensor:
    with torch.no_grad():
        return s.base.forward(s.inputs)


def _risk(s: Setup) -> np.ndarray:
    _, risk, flagged = s.corrected.gated(s.inputs, mode="detector", tau=float("inf"))
    assert risk is not None and not flagged.any()
    return risk


# -- the invariants ---------------------------------------------------------------------------


def test_unflagged_rows_are_bit_identical_to_base(setup):
    s = setup
    risk = _risk(s)
    tau = float(np.median(risk))
    logits, risk2, flagged = s.corrected.gated(s.inputs, mode="detector", tau=tau)
    np.testing.assert_array_equal(risk2, risk)
    np.testing.assert_array_equal(flagged, risk > tau)
    assert 0 < flagged.sum() < len(flagged)
    base = _base_logits(s)
    keep, fix = torch.as_tensor(~flagged), torch.as_tensor(flagged)
    assert torch.equal(logits[keep], base[keep])
    # flagged rows: the adapter changes them, as much as when it is on for every row
    assert float((logits[fix] - base[fix]).abs().max()) > 1e-3
    on, _, _ = s.corrected.gated(s.inputs, mode="on")
    torch.testing.assert_close(logits[fix], on[fix], atol=1e-5, rtol=0)


def test_forced_on_equals_plain_peft_and_off_equals_base(setup):
    s = setup
    on, risk, flagged = s.corrected.gated(s.inputs, mode="on")
    assert risk is None and flagged.all()
    off, _, flagged_off = s.corrected.gated(s.inputs, mode="off")
    assert not flagged_off.any()
    with torch.no_grad():
        plain = s.corrected.base.forward(s.inputs)  # peft layers, adapter active, no gating
    # a convolution's update runs folded into its kernel (W + BA): the same sum in another order
    torch.testing.assert_close(on, plain, atol=1e-5 if s.kind == "cnn" else 1e-6, rtol=0)
    base = _base_logits(s)
    assert torch.equal(off, base)
    assert float((on - base).abs().max()) > 1e-3


def test_training_touches_only_adapter_parameters(setup):
    s = setup
    assert s.lora_b_trained, "three steps of the loop left every LoRA B matrix at zero"
    adapted = s.corrected.base.module.state_dict()
    got = {k.replace(".base_layer", ""): v for k, v in adapted.items() if "lora_" not in k}
    assert set(got) == set(s.base_state)
    for k, v in s.base_state.items():
        assert torch.equal(got[k], v), k  # base and head, byte for byte
    # the model passed in is not adapted: fit_fairnet works on a copy
    assert not lora_layers(s.base.module)
    for k, v in s.base.module.state_dict().items():
        assert torch.equal(v, s.base_state[k]), k
    trainable = {n for n, p in s.corrected.base.module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_default_lora_targets_run_after_the_tap(setup):
    s = setup
    module = s.corrected.base.module
    names = {n for n, m in module.named_modules() if m in set(lora_layers(module))}
    assert names == set(s.base.default_lora_targets)
    if s.kind == "hf":
        assert s.corrected.tap_layer == "bert.encoder.layer.1"
        assert names == {f"bert.encoder.layer.{i}.attention.self.{p}"
                         for i in (2, 3) for p in ("query", "value")}
    elif s.kind == "cnn":
        assert (s.corrected.tap_layer, names) == (INPUT, {"features.0", "features.2", "fc1", "fc2"})
        return  # the input comes before every layer
    else:
        assert (s.corrected.tap_layer, names) == ("0", {"2"})
    order: list[str] = []
    layers = {s.corrected.tap_layer: s.corrected.base.check_layer(s.corrected.tap_layer)}
    layers.update({n: module.get_submodule(n) for n in names})
    handles = [m.register_forward_hook(lambda _m, _i, _o, n=n: order.append(n))
               for n, m in layers.items()]
    try:
        with torch.no_grad():
            s.corrected.base.forward(s.inputs)
    finally:
        for h in handles:
            h.remove()
    assert order[0] == s.corrected.tap_layer and set(order[1:]) == names


def test_lora_layer_before_the_tap_is_refused(setup):
    from peft import LoraConfig, get_peft_model

    s = setup
    if s.kind == "cnn":
        pytest.skip("a detector on the input comes before every layer")
    work = copy.deepcopy(s.base)
    early = "bert.encoder.layer.0.attention.self.query" if s.kind == "hf" else "0"
    peft_model = get_peft_model(work.module, LoraConfig(r=2, target_modules=[early]),
                                adapter_name=ADAPTER)
    work.module = peft_model.base_model.model
    for mode in ("detector", "on", "off"):
        with pytest.raises(RuntimeError, match="before the tap"):
            gated_forward(work, s.inputs, tap_layer=s.corrected.tap_layer, mode=mode,
                          detector=s.detector.module, tau=0.5)
    for m in work.module.modules():  # hooks removed even after the error
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_gating_leaves_no_hooks(setup):
    s = setup
    s.corrected.gated(s.inputs)
    with pytest.raises(RuntimeError, match="tap layer"):  # an error inside the pass cleans up too
        _fail_inside_pass(s)
    for m in s.corrected.base.module.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "forward" not in vars(m)  # the per-call forward of LoRA layers is removed


def _fail_inside_pass(s):
    """A gated pass that raises after the LoRA layers were patched (a LoRA layer sees other rows)."""
    from fairfix.correct.gating import Gate, gated

    gate = Gate(mode="detector", detector=s.detector.module, tau=0.5)
    with gated(s.corrected.base, gate, s.corrected.tap_layer):
        gate.rows = torch.tensor([0])
        gate.all_on = False
        gate.flagged = torch.ones(1, dtype=torch.bool)  # pretend the tap saw one row
        layer = lora_layers(s.corrected.base.module)[-1]  # a Linear in every kind
        layer(torch.zeros(3, layer.in_features))


@pytest.mark.parametrize("setup", ["hf"], indirect=True)  # the token-sequence tap
def test_sequence_tap_gate_uses_the_attention_mask(setup):
    s = setup
    mask = s.inputs["attention_mask"]
    lengths = mask.sum(1)
    assert int(lengths.min()) < mask.shape[1]  # the batch is padded
    risk = _risk(s)
    rep = s.base.representation(s.inputs)
    assert rep.values.dim() == 3 and torch.equal(rep.mask, mask)
    masked = s.detector.module.risk(rep.values, rep.mask).double().numpy()
    np.testing.assert_array_equal(risk, masked)
    unmasked = s.detector.module.risk(rep.values, None).double().numpy()
    assert np.abs(unmasked - risk).max() > 1e-4  # the mask matters for these rows
    # a short row scores (about) the same alone as inside a padded batch, and its gate follows
    short = int(torch.argmin(lengths))
    alone = s.base.encode(s.frame.iloc[[short]])
    assert alone["input_ids"].shape[1] < mask.shape[1]
    _, risk_alone, _ = s.corrected.gated(alone, mode="detector", tau=float("inf"))
    np.testing.assert_allclose(risk_alone[0], risk[short], atol=1e-5)
    tau = float(risk[short]) - 1e-3
    logits, _, flagged = s.corrected.gated(s.inputs, mode="detector", tau=tau)
    assert flagged[short]
    base = _base_logits(s)
    keep = torch.as_tensor(~flagged)
    assert torch.equal(logits[keep], base[keep])


def test_adapter_names_fallback_gives_the_same_rows(setup, monkeypatch):
    """LoRA layers that cannot be gated on their update go through peft's ``adapter_names``."""
    from fairfix.correct import gating

    s = setup
    risk = _risk(s)
    tau = float(np.median(risk))
    fast, _, flagged = s.corrected.gated(s.inputs, mode="detector", tau=tau)
    monkeypatch.setattr(gating, "_row_sparse", lambda _layer: False)
    calls = []
    for lora_type in {type(layer) for layer in lora_layers(s.corrected.base.module)}:  # Linear, Conv2d
        def spy(self, *args, _original=lora_type._mixed_batch_forward, **kwargs):
            calls.append(self)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(lora_type, "_mixed_batch_forward", spy)
    slow, _, flagged_slow = s.corrected.gated(s.inputs, mode="detector", tau=tau)
    assert len(calls) == len(lora_layers(s.corrected.base.module))
    np.testing.assert_array_equal(flagged_slow, flagged)
    keep, fix = torch.as_tensor(~flagged), torch.as_tensor(flagged)
    assert torch.equal(slow[keep], _base_logits(s)[keep])
    torch.testing.assert_close(slow[fix], fast[fix], atol=1e-5, rtol=0)


def test_unflagged_rows_stay_exact_with_non_finite_adapter(setup):
    """A wrecked adapter (NaN/inf weights) never leaks into rows that are not flagged."""
    s = setup
    work = copy.deepcopy(s.corrected.base)
    with torch.no_grad():
        for i, layer in enumerate(lora_layers(work.module)):
            layer.lora_B[ADAPTER].weight.fill_(float("nan") if i % 2 == 0 else float("inf"))
    base = _base_logits(s)
    off, _, _ = gated_forward(work, s.inputs, tap_layer=s.corrected.tap_layer, mode="off")
    assert torch.equal(off, base)
    risk = _risk(s)
    logits, _, flagged = gated_forward(work, s.inputs, tap_layer=s.corrected.tap_layer,
                                       mode="detector", detector=s.detector.module,
                                       tau=float(np.median(risk)))
    keep = torch.as_tensor(~flagged)
    assert 0 < keep.sum() < len(keep)
    assert torch.equal(logits[keep], base[keep])


class _Projection:
    """A second "detector" for the stacked gate: a fixed random projection of the tap, independent of the first."""

    def __init__(self, dim: int, seed: int):
        self.w = torch.randn(dim, generator=torch.Generator().manual_seed(seed))

    def risk(self, values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        v = values.float()
        if v.dim() == 3:  # token states (B, T, D): mean over the real tokens
            m = torch.ones(v.shape[:2]) if mask is None else mask.float()
            v = (v * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
        return torch.sigmoid(v @ self.w[: v.shape[1]])


def test_two_stacked_adapters_one_pass_matches_peft_and_spares_unflagged_rows(setup):
    """Several attributes (fairfix.correct.stacking) on every kind: rows flagged by no stage are
    bit-identical to the base; every other row equals peft's forward with its adapters active together."""
    from peft import LoraConfig

    from fairfix.correct.stacking import Stage, stacked_forward

    s = setup
    work, pm = copy.deepcopy((s.corrected.base, s.corrected.peft_model))
    targets = sorted({n.rsplit(".lora_A", 1)[0] for n, _ in work.module.named_modules() if n.endswith(".lora_A")})
    pm.add_adapter("second", LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in lora_layers(work.module):
            w = layer.lora_B["second"].weight
            w.copy_(torch.randn(w.shape, generator=gen) * 0.5)
    tap = s.corrected.tap_layer
    risk1 = _risk(s)
    with torch.no_grad(), s.base.capture(tap) as store:
        s.base.forward(s.inputs)
    proj = _Projection(int(np.prod(store["out"].shape[2:] if store["out"].dim() == 3 else store["out"].shape[1:])), 3)
    risk2 = proj.risk(store["out"], s.inputs.get("attention_mask") if store["out"].dim() == 3 else None)
    stages = [Stage(ADAPTER, tap, "detector", s.detector.module, float(np.median(risk1))),
              Stage("second", tap, "detector", proj, float(risk2.median()))]
    logits, risks, flags = stacked_forward(work, s.inputs, stages)
    np.testing.assert_array_equal(risks[0], risk1)
    base = _base_logits(s)
    none = torch.as_tensor(~flags[0] & ~flags[1])
    assert none.any()
    assert torch.equal(logits[none], base[none])
    for pattern in ((True, False), (False, True), (True, True)):
        rows = np.flatnonzero((flags[0] == pattern[0]) & (flags[1] == pattern[1]))
        assert len(rows), pattern
        idx = torch.as_tensor(rows)
        pm.base_model.set_adapter([n for n, on in zip((ADAPTER, "second"), pattern, strict=True) if on])
        with torch.no_grad():
            ref = work.forward({k: v[idx] for k, v in s.inputs.items()})
        torch.testing.assert_close(logits[idx], ref, rtol=1e-4, atol=1e-5)
        assert not torch.equal(logits[idx], base[idx])
    for layer in lora_layers(work.module):  # nothing left on the modules
        assert "forward" not in vars(layer)


def test_prefix_cache_gives_the_whole_pass_on_a_transformer(tmp_path):
    """The frozen layers below the first adapted one, run once: the same logits, and the layers restored."""
    pytest.importorskip("transformers")
    from fairfix.correct.prefix import prefix_cache

    model = load_model(tiny_bert(tmp_path / "bert"), text_column="text")
    frame = text_frame(120, seed=2)
    inputs = model.encode(frame)
    targets = model.default_lora_targets  # query/value of the layers after the tap (layer 1 of 4)
    assert min(int(t.split("layer.")[1].split(".")[0]) for t in targets) == 2
    cache = prefix_cache(model, inputs, targets, batch=50)
    assert cache is not None and cache.k == 2 and cache.hidden.shape[:2] == inputs["input_ids"].shape
    ids = torch.tensor([5, 0, 77, 119, 33])
    batch = {k: v[ids] for k, v in inputs.items()}
    with torch.no_grad():
        whole = model.forward(batch)
        with cache.rows(ids):
            cached = model.forward(batch)
        again = model.forward(batch)
    torch.testing.assert_close(cached, whole, atol=1e-5, rtol=0)
    assert torch.equal(again, whole)  # the layers compute again outside the block
    # layers of the prefix do no work inside the block: a hook on layer 0 sees its input passed through
    seen = {}
    layer0 = model.module.bert.encoder.layer[0]
    handle = layer0.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    try:
        with torch.no_grad(), cache.rows(ids):
            model.forward(batch)
    finally:
        handle.remove()
    assert torch.equal(seen["out"][0] if isinstance(seen["out"], tuple) else seen["out"],
                       model.module.bert.embeddings(batch["input_ids"], token_type_ids=batch.get("token_type_ids")))
    # no cache where it cannot help: an adapted layer at the bottom, or a model without encoder layers
    assert prefix_cache(model, inputs, ["bert.encoder.layer.0.attention.self.query"], batch=50) is None
    assert prefix_cache(model, inputs, ["classifier"], batch=50) is None
