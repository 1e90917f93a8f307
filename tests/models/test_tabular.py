"""The fairfix tabular MLP as a library: training, save/load round trip, taps, checkpoint checks.

Small data throughout (a 2,000-row sample of Adult, 2 epochs) so the file runs in seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from fairfix import errors
from fairfix.artifacts import MANIFEST, sha256_file
from fairfix.datasets import load_adult
from fairfix.models import load_model
from fairfix.models.base import check_state_dict
from fairfix.models.tabular import WEIGHTS, TabularModel, TrainConfig, train_tabular
from fairfix.predict import predict
from fairfix.training import select_features, train_model

HIDDEN = [16, 8]  # distinct widths, so a tap at the wrong layer shows in the shape


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    df = load_adult("train").sample(2000, random_state=0).reset_index(drop=True)
    df.insert(0, "id", np.arange(len(df), dtype=np.int64))
    return df


@pytest.fixture(scope="module")
def trained(frame, tmp_path_factory):
    """(in-memory model, its saved directory) trained with sex/race excluded."""
    features = select_features(list(frame.columns), label="income", exclude=["id"],
                               groups=["sex", "race"])
    cfg = TrainConfig(hidden=HIDDEN, epochs=2, seed=0)
    model, info = train_tabular(frame, label="income", features=features, config=cfg)
    out = tmp_path_factory.mktemp("tab") / "model"
    from dataclasses import asdict

    config = {**asdict(cfg), "label": "income", "features": features}
    model.save(out, config=config, training=info)
    return model, out


def test_round_trip_loaded_model_equals_in_memory(trained, frame, tmp_path):
    model, out = trained
    loaded = load_model(out)
    assert isinstance(loaded, TabularModel)
    assert loaded.classes == model.classes == ["<=50K", ">50K"]
    assert loaded.positive == ">50K"
    assert loaded.input_columns == model.input_columns
    assert "sex" not in loaded.input_columns and "race" not in loaded.input_columns
    own, back = model.module.state_dict(), loaded.module.state_dict()
    assert own.keys() == back.keys()
    for k in own:
        assert torch.equal(own[k], back[k]), k
    p_mem = model.predict_proba(frame)
    p_load = loaded.predict_proba(frame)
    assert p_mem.shape == (len(frame), 2)
    assert np.array_equal(p_mem, p_load)
    # The same through `predict` on a Parquet file (all 2,000 rows in one batch).
    src = tmp_path / "in.parquet"
    frame.to_parquet(src)
    res = predict(str(src), loaded, tmp_path / "out.parquet", id_column="id")
    assert res["rows"] == len(frame)
    got = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert got["id"].tolist() == frame["id"].tolist()
    assert np.array_equal(got["score"].to_numpy(), p_mem[:, 1])
    expected_pred = np.where(p_mem[:, 1] >= 0.5, ">50K", "<=50K")
    assert got["pred"].tolist() == expected_pred.tolist()


def test_manifest_records_files_and_loading_verifies_them(trained):
    _, out = trained
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["kind"] == "model"
    assert manifest["model_kind"] == "tabular_mlp"
    assert manifest["files"] == {WEIGHTS: sha256_file(out / WEIGHTS)}
    assert manifest["architecture"]["hidden"] == HIDDEN
    assert load_model(out).digest  # artifact identity is computed


def test_representation_shapes_at_tap_layers(trained, frame):
    model, _ = trained
    loaded = load_model(trained[1])
    inputs = loaded.encode(frame.iloc[:7])
    assert loaded.default_tap_layer == "blocks.0"
    rep = loaded.representation(inputs)
    assert not rep.is_sequence and rep.mask is None
    assert tuple(rep.values.shape) == (7, HIDDEN[0])
    rep1 = loaded.representation(inputs, "blocks.1")
    assert tuple(rep1.values.shape) == (7, HIDDEN[1])
    # The last block's output is the head's input.
    logits = loaded.forward(inputs)
    with torch.no_grad():
        assert torch.allclose(loaded.module.head(rep1.values), logits)
    # Hooks are removed afterwards.
    assert all(not m._forward_hooks for m in loaded.module.modules())
    assert loaded.linear_layers() == ["blocks.0.linear", "blocks.1.linear", "head"]
    assert loaded.default_lora_targets == ["blocks.1.linear"]


def test_unknown_layer_is_model_error_listing_layers(trained, frame):
    loaded = load_model(trained[1])
    with pytest.raises(errors.ModelError) as exc:
        loaded.representation(loaded.encode(frame.iloc[:3]), "blocks.9")
    msg = str(exc.value)
    assert "'blocks.9'" in msg
    assert "blocks.0" in msg and "blocks.1" in msg and "head" in msg
    assert all(not m._forward_hooks for m in loaded.module.modules())


def test_training_is_deterministic_per_seed(frame):
    features = ["age", "education", "hours-per-week", "occupation"]

    def weights(seed: int) -> dict[str, torch.Tensor]:
        m, _ = train_tabular(frame, label="income", features=features,
                             config=TrainConfig(hidden=HIDDEN, epochs=2, seed=seed))
        return m.module.state_dict()

    a, b, c = weights(3), weights(3), weights(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # No global seeding leaks out of training.
    torch.manual_seed(123)
    x = torch.rand(3)
    torch.manual_seed(123)
    weights(3)
    assert torch.equal(torch.rand(3), x)


def test_group_columns_excluded_unless_named(frame, tmp_path):
    small = frame.iloc[:400]
    s = train_model(small, label="income", out=tmp_path / "a", groups=["sex"], exclude=["id"],
                    epochs=1)
    assert "sex" not in s["features"] and s["sensitive_columns_excluded"] == ["sex"]
    cfg = json.loads((tmp_path / "a" / MANIFEST).read_text())["config"]
    assert cfg["sensitive_columns"] == ["sex"] and "sex" not in cfg["features"]
    assert cfg["excluded"] == ["id"] and "id" not in cfg["features"]
    s2 = train_model(small, label="income", out=tmp_path / "b", groups=["sex"],
                     features=["age", "sex"], epochs=1)
    assert s2["features"] == ["age", "sex"] and s2["sensitive_columns_excluded"] == []
    assert load_model(tmp_path / "b").input_columns == ["age", "sex"]


def test_select_features_errors():
    cols = ["a", "b", "y"]
    with pytest.raises(errors.DataError, match="'zz'"):
        select_features(cols, label="y", groups=["zz"])
    with pytest.raises(errors.UsageError, match="label"):
        select_features(cols, label="y", features=["a", "y"])
    with pytest.raises(errors.UsageError):
        select_features(["a", "y"], label="y", groups=["a"])


def test_train_config_range_checks():
    with pytest.raises(errors.UsageError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(errors.UsageError, match="hidden"):
        TrainConfig(hidden=[])


def test_check_state_dict_names_key_and_shape(trained):
    model, _ = trained
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    check_state_dict(model.module, state, "w.safetensors")  # matches: no error
    missing = dict(state)
    del missing["blocks.1.linear.bias"]
    with pytest.raises(errors.ModelError, match=r"w\.safetensors.*'blocks\.1\.linear\.bias'"):
        check_state_dict(model.module, missing, "w.safetensors")
    extra = {**state, "blocks.7.linear.weight": torch.zeros(1)}
    with pytest.raises(errors.ModelError, match="'blocks.7.linear.weight'"):
        check_state_dict(model.module, extra, "w.safetensors")
    shaped = {**state, "head.weight": torch.zeros(3, HIDDEN[1])}
    with pytest.raises(errors.ModelError, match=r"'head\.weight' has shape \(3, 8\).*\(2, 8\)"):
        check_state_dict(model.module, shaped, "w.safetensors")


def test_unknown_categories_and_missing_values_are_scored(trained, frame):
    model, _ = trained
    rows = frame.iloc[:4].copy()
    rows["workclass"] = ["never-seen", None, np.nan, "Private"]
    rows["age"] = [np.nan, 30, 40, 50]
    p = model.predict_proba(rows)
    assert p.shape == (4, 2) and np.isfinite(p).all()
    assert np.allclose(p.sum(axis=1), 1.0)
    # An unknown value and a missing value share the unknown bucket.
    x = model.encode(rows)["x"]
    j = model.pre.categorical.index("workclass")
    start = len(model.pre.numeric) + sum(len(v) + 1 for v in model.pre.vocabularies[:j])
    assert x[0, start] == 1 and x[1, start] == 1 and x[2, start] == 1 and x[3, start] == 0


def test_numeric_column_with_text_is_data_error(trained, frame):
    model, _ = trained
    rows = frame.iloc[:2].copy().astype({"age": object})
    rows.loc[rows.index[0], "age"] = "forty"
    with pytest.raises(errors.DataError, match="'age'"):
        model.predict_proba(rows)


def test_load_model_refuses_non_models(tmp_path):
    with pytest.raises(errors.ModelError, match="no such model"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.ModelError, match="not a model fairfix recognises"):
        load_model(tmp_path / "empty")
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(errors.ModelError, match="--factory"):
        load_model(f)


def test_load_model_refuses_other_artifact_kind(trained, tmp_path):
    import shutil

    d = tmp_path / "det"
    shutil.copytree(trained[1], d)
    m = json.loads((d / MANIFEST).read_text())
    m["kind"] = "detector"
    (d / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(errors.ModelError, match="detector, not a model"):
        load_model(d)
