"""The bias detector as a library (DESIGN.md section 1, step 1).

Detection quality in full and partial mode on synthetic representations where the
group is linearly visible; pseudo-labels joined by row id (never by position in a
shuffled batch); attention pooling independent of padding; the artifact round trip
and its base-model check; one end-to-end ``fit_detector`` per mode on a tiny
tabular model.  Small data and few epochs: the file runs in well under a minute.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch

from fairfix import errors
from fairfix.data.groups import group_values
from fairfix.detect import BiasDetector, DetectorConfig, fit_detector, load_detector
from fairfix.detect import fit as fitmod
from fairfix.detect.fit import evaluate, train_module
from fairfix.models import load_model
from fairfix.models.runner import collect_representations
from fairfix.models.tabular import TrainConfig, train_tabular

FEATURES = ["x0", "x1", "x2", "x3"]


# -- synthetic representations ------------------------------------------------------


def synthetic_reps(
    n: int = 6000, dim: int = 16, shift: float = 4.0, share: float = 0.3, seed: int = 0
):
    """Gaussian noise plus ``shift`` along one unit direction for the minority rows (~``share``).

    The Bayes detector (threshold halfway along the direction) has TPR = 1 - FPR = Phi(shift / 2).
    """
    rng = np.random.default_rng(seed)
    group = (rng.random(n) < share).astype(float)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    x = rng.normal(size=(n, dim)) + np.outer(group, direction) * shift
    return torch.tensor(x, dtype=torch.float32), group


def split(n: int, holdout: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    k = int(n * holdout)
    return np.sort(perm[k:]), np.sort(perm[:k])


# Small batches: mode partial's 480 training rows still get enough optimiser steps.
CFG = DetectorConfig(epochs=10, batch_size=64, seed=0)


def fit_and_score(values, targets, rows, test, config=CFG):
    module = train_module(values, None, targets, rows, config)
    risk = module.risk(values[torch.as_tensor(test)]).double().numpy()
    return evaluate(risk, targets[test], np.where(targets[test] == 1, "min", "maj"), config.tau)


@pytest.fixture(scope="module")
def full_vs_partial():
    values, group = synthetic_reps()
    train, test = split(len(group))
    full = fit_and_score(values, group, train, test)
    rng = np.random.default_rng(1)
    labeled = np.sort(rng.choice(train, size=len(train) // 10, replace=False))  # 10% of the labels
    partial_targets = np.full(len(group), np.nan)
    partial_targets[labeled] = group[labeled]  # the rest are missing, as in mode partial
    part = train_module(values, None, partial_targets, labeled, CFG)
    risk = part.risk(values[torch.as_tensor(test)]).double().numpy()
    partial = evaluate(risk, group[test], np.where(group[test] == 1, "min", "maj"), CFG.tau)
    return full, partial


def test_full_mode_detects_a_linearly_visible_group(full_vs_partial):
    full, _ = full_vs_partial
    assert full["tpr"] >= 0.9, full
    assert full["fpr"] <= 0.1, full
    assert set(full["activation_rate_by_group"]) == {"maj", "min"}
    assert full["activation_rate_by_group"]["min"] == pytest.approx(full["tpr"])
    assert full["activation_rate_by_group"]["maj"] == pytest.approx(full["fpr"])


def test_partial_mode_with_ten_percent_labels_is_close_to_full(full_vs_partial):
    full, partial = full_vs_partial
    # Compare at the same FPR: the partial sweep's point nearest full's FPR at tau 0.5.
    nearest = min(partial["sweep"], key=lambda p: abs(p["fpr"] - full["fpr"]))
    assert abs(nearest["fpr"] - full["fpr"]) <= 0.03, (nearest, full)
    assert abs(nearest["tpr"] - full["tpr"]) <= 0.05, (nearest, full)
    # ... and at tau 0.5 itself it is still a usable detector.
    assert partial["tpr"] >= 0.85 and partial["fpr"] <= 0.15, partial


def test_evaluate_sweep_is_monotone_and_json_safe(full_vs_partial):
    full, _ = full_vs_partial
    taus = [p["tau"] for p in full["sweep"]]
    assert (
        taus == sorted(taus) and taus[0] == pytest.approx(0.05) and taus[-1] == pytest.approx(0.95)
    )
    for a, b in zip(full["sweep"], full["sweep"][1:], strict=False):
        assert b["tpr"] <= a["tpr"] and b["fpr"] <= a["fpr"]
    json.dumps(full, allow_nan=False)
    # A held-out set without positives: TPR undefined -> None (never NaN, never 0).
    none_pos = evaluate(np.array([0.2, 0.7]), np.array([0.0, 0.0]), np.array(["a", "a"]), 0.5)
    assert none_pos["tpr"] is None and none_pos["fpr"] == 0.5
    json.dumps(none_pos, allow_nan=False)


# -- pseudo-labels are joined by row id -----------------------------------------------


def gapped_reps(n: int = 3000, dim: int = 8, seed: int = 3):
    """Two clusters 10 sd apart along one direction: a correct detector separates every row."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.3).astype(float)
    direction = np.eye(dim)[0]
    x = rng.normal(size=(n, dim)) + np.outer(label - 0.5, direction) * 10.0
    return torch.tensor(x, dtype=torch.float32), label


def test_pseudo_labels_follow_row_ids_in_a_shuffled_subset():
    values, label = gapped_reps()
    n = len(label)
    rows = np.random.default_rng(5).permutation(n)[:1200]  # non-contiguous and NOT sorted
    targets = np.full(n, np.nan)
    targets[rows] = label[rows]  # keyed by row id; every other row has no target
    module = train_module(values, None, targets, rows, DetectorConfig(epochs=15, batch_size=128))
    flagged = module.risk(values).numpy() > 0.5
    # Exactly the rows whose pseudo-label is 1 are flagged, seen in training or not.
    assert np.array_equal(flagged[rows], label[rows] == 1)
    assert np.array_equal(flagged, label == 1)


def test_every_training_batch_pairs_a_row_with_its_own_target(monkeypatch):
    """Record (row id, target) as the loss sees them; the row id travels in feature 0."""
    values, label = gapped_reps(n=1000)
    n = len(label)
    values = torch.cat([torch.arange(n, dtype=torch.float32)[:, None], values], dim=1)
    rows = np.random.default_rng(7).permutation(n)[::2]  # every other row, shuffled
    targets = np.full(n, np.nan)
    targets[rows] = np.random.default_rng(8).random(len(rows)) < 0.4  # labels unrelated to features

    seen_ids: list[torch.Tensor] = []
    seen_targets: list[torch.Tensor] = []

    class Recording(BiasDetector):
        def forward(self, h, mask=None):
            if self.training:
                seen_ids.append(h[:, 0].detach().round().long())
            return super().forward(h, mask)

    class RecordingLoss(torch.nn.BCEWithLogitsLoss):
        def forward(self, logits, target):
            seen_targets.append(target.detach().clone())
            return super().forward(logits, target)

    monkeypatch.setattr(fitmod, "BiasDetector", Recording)
    monkeypatch.setattr(fitmod.nn, "BCEWithLogitsLoss", RecordingLoss)
    epochs = 3
    train_module(values, None, targets, rows, DetectorConfig(epochs=epochs, batch_size=64))
    assert len(seen_ids) == len(seen_targets) > 0
    ids = torch.cat(seen_ids).numpy()
    got = torch.cat(seen_targets).numpy()
    assert not np.isnan(got).any()  # no row without a target was trained on
    np.testing.assert_array_equal(got, targets[ids])
    # Each epoch visits each training row once, in a shuffled order.
    per_epoch = ids.reshape(epochs, len(rows))
    for order in per_epoch:
        assert sorted(order.tolist()) == sorted(rows.tolist())
    assert not np.array_equal(per_epoch[0], np.sort(per_epoch[0]))


# -- attention pooling ----------------------------------------------------------------


def test_attention_pooling_ignores_padding_length_and_content():
    torch.manual_seed(0)
    det = BiasDetector(dim=8, hidden=16, sequence=True).eval()
    det.set_standardisation(torch.randn(8), torch.rand(8) + 0.5)
    lengths = torch.tensor([1, 3, 5, 2])
    h = torch.randn(4, 5, 8)
    mask = torch.arange(5)[None, :] < lengths[:, None]  # (4, 5)
    h = torch.where(
        mask[..., None], h, torch.zeros(())
    )  # zero padding, as collect_representations pads
    base = det.risk(h, mask)
    assert base.shape == (4,)
    for extra, garbage in ((0, 1e6), (7, 1e6), (20, 1e4), (3, float("nan")), (3, float("inf"))):
        t = 5 + extra
        m2 = torch.arange(t)[None, :] < lengths[:, None]
        h2 = (
            torch.randn(4, t, 8) * garbage
            if np.isfinite(garbage)
            else torch.full((4, t, 8), garbage)
        )
        h2[m2] = h[mask]  # the real tokens; every padded slot holds garbage
        pad = h2[~m2]
        assert len(pad) and (not torch.isfinite(pad).any() or pad.abs().mean() > 100)
        torch.testing.assert_close(det.risk(h2, m2), base, rtol=0, atol=1e-6)
    # A row scored alone (no padding at all) gets the same score as in the padded batch.
    for i, k in enumerate(lengths.tolist()):
        alone = det.risk(h[i : i + 1, :k], torch.ones(1, k, dtype=torch.bool))
        torch.testing.assert_close(alone, base[i : i + 1], rtol=0, atol=1e-6)


def test_sequence_training_does_not_depend_on_padding():
    """train_module's masked statistics and pooling: garbage padding trains the same detector."""
    rng = np.random.default_rng(0)
    n, t, d = 300, 6, 8
    label = (rng.random(n) < 0.4).astype(float)
    lengths = torch.as_tensor(rng.integers(2, t + 1, size=n))
    h = torch.randn(n, t, d, generator=torch.Generator().manual_seed(0))
    h[:, 0, 0] += torch.as_tensor(
        label * 3.0, dtype=torch.float32
    )  # the group is in the first token
    mask = torch.arange(t)[None, :] < lengths[:, None]
    h = torch.where(mask[..., None], h, torch.zeros(()))
    t2 = t + 4
    h2 = torch.randn(n, t2, d, generator=torch.Generator().manual_seed(1)) * 1e6
    h2[:, 3:] = float("nan")  # some padding is not even finite
    m2 = torch.arange(t2)[None, :] < lengths[:, None]
    h2[m2] = h[mask]
    rows = np.arange(n)
    cfg = DetectorConfig(epochs=3, batch_size=64)
    a = train_module(h, mask, label, rows, cfg)
    b = train_module(h2, m2, label, rows, cfg)
    torch.testing.assert_close(b.mean, a.mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(b.scale, a.scale, rtol=0, atol=1e-5)
    torch.testing.assert_close(b.risk(h2, m2), a.risk(h, mask), rtol=0, atol=1e-5)


# -- end to end on a tiny tabular model -----------------------------------------------


def synthetic_frame(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """x0 carries the group (b: ~30% of rows, +5 sd); y depends on x1 + x2 only."""
    rng = np.random.default_rng(seed)
    g = rng.random(n) < 0.3
    x = rng.normal(size=(n, 4))
    x[:, 0] += np.where(g, 5.0, 0.0)
    y = (x[:, 1] + x[:, 2] + 0.5 * rng.normal(size=n) > 0).astype(int)
    df = pd.DataFrame({c: x[:, i] for i, c in enumerate(FEATURES)})
    df["grp"] = np.where(g, "b", "a")
    df["y"] = y
    return df


def save_model(frame: pd.DataFrame, out, seed: int = 0):
    cfg = TrainConfig(hidden=[16, 8], epochs=2, seed=seed)
    model, info = train_tabular(frame, label="y", features=FEATURES, config=cfg)
    model.save(out, config={**asdict(cfg), "label": "y", "features": FEATURES}, training=info)
    return load_model(out)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_frame()


@pytest.fixture(scope="module")
def model(frame, tmp_path_factory):
    return save_model(frame, tmp_path_factory.mktemp("base") / "model")


@pytest.fixture(scope="module")
def full_detector(frame, model):
    return fit_detector(
        frame, model, group="grp", minority=["b"], config=DetectorConfig(epochs=20, batch_size=256)
    )


def test_fit_detector_full_mode_end_to_end(full_detector):
    rep = full_detector.report
    assert rep["mode"] == "full" and rep["labeled_rows"] == 1500
    assert rep["heldout_rows"] == 300 and rep["train_rows"] == 1200
    assert rep["minority"] == ["b"] and rep["layer"] == "blocks.0"
    assert rep["tpr"] >= 0.9 and rep["fpr"] <= 0.1, rep
    assert rep["reason"] is None
    assert full_detector.module.mean.shape == (16,)


def test_fit_detector_partial_mode_trains_on_labeled_rows_only(frame, model, full_detector):
    part = frame.copy()
    blank = np.random.default_rng(2).random(len(part)) < 0.9
    part.loc[blank, "grp"] = np.nan
    det = fit_detector(
        part, model, group="grp", minority=["b"], config=DetectorConfig(epochs=20, batch_size=64)
    )
    rep = det.report
    labeled = int((~blank).sum())
    assert rep["mode"] == "partial" and rep["labeled_rows"] == labeled
    assert rep["train_rows"] + rep["heldout_rows"] == labeled
    assert rep["tpr"] is not None and rep["tpr"] >= 0.8, rep
    # On the same held-out rows as full mode, it stays close to the full-label detector.
    values, _, _ = collect_representations(model, frame)
    _, hold = split(len(frame), seed=11)
    truth = (frame["grp"].to_numpy()[hold] == "b").astype(float)
    groups = frame["grp"].to_numpy()[hold]
    full_eval = evaluate(full_detector.risk(values[hold]), truth, groups, 0.5)
    part_eval = evaluate(det.risk(values[hold]), truth, groups, 0.5)
    nearest = min(part_eval["sweep"], key=lambda p: abs(p["fpr"] - full_eval["fpr"]))
    assert abs(nearest["tpr"] - full_eval["tpr"]) <= 0.1, (nearest, full_eval)


def test_fit_detector_mode_none_joins_pseudo_labels_by_row_id(frame, model, monkeypatch):
    """Pseudo-labels from an oracle-like score (x0 of the very rows asked for): if they were
    attached to the wrong rows the distilled detector would be at chance on the true group."""
    x0 = frame["x0"].to_numpy()
    asked: list[np.ndarray] = []

    def fake_scores(values, mask, rows, method, proba, y_idx, seed):
        asked.append(np.asarray(rows))
        return x0[rows]

    monkeypatch.setattr(fitmod, "pseudo_scores", fake_scores)
    # max_unsupervised_rows < n: the scored pool is a random, non-contiguous subset of rows.
    cfg = DetectorConfig(
        mode="none", epochs=20, batch_size=128, unsupervised="lof", max_unsupervised_rows=1000
    )
    det = fit_detector(frame, model, eval_group="grp", minority=["b"], config=cfg)
    rep = det.report
    assert len(asked) == 1 and len(asked[0]) == 1000
    assert not np.array_equal(asked[0], np.arange(1000))
    assert rep["mode"] == "none" and rep["labeled_rows"] == 0
    assert rep["unsupervised"] == {"method": "lof", "rows_scored": 1000, "contamination": 0.3}
    assert rep["tpr"] >= 0.9 and rep["fpr"] <= 0.1, rep
    assert "grp" in rep["evaluated_on"]


def test_fit_detector_mode_none_without_labels_reports_why(frame, model):
    cfg = DetectorConfig(mode="none", epochs=2, unsupervised="lof")
    rep = fit_detector(frame.drop(columns=["grp"]), model, config=cfg).report
    assert rep["mode"] == "none" and rep["tpr"] is None and rep["fpr"] is None
    assert rep["sweep"] == [] and "--eval-group" in rep["reason"]
    assert 0.0 <= rep["activation_rate"] <= 1.0
    json.dumps(rep, allow_nan=False)
    # The errors signal needs the label column.
    with pytest.raises(errors.UsageError, match="--label"):
        fit_detector(
            frame, model, config=DetectorConfig(mode="none", epochs=1, unsupervised="errors")
        )


def test_nullable_group_columns_count_as_missing():
    """pandas' NA (nullable Int64 / string columns) is a missing value, like None and NaN."""
    for col in (
        pd.Series([1, None, 2, 1], dtype="Int64"),
        pd.Series(["a", None, "b", "a"], dtype="string"),
    ):
        vals, distinct = group_values(pd.DataFrame({"g": col}), "g")
        assert vals[1] is None and len(distinct) == 2


# -- the artifact ---------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_risk(full_detector, model, frame, tmp_path):
    out = tmp_path / "det"
    manifest = full_detector.save(out)
    assert manifest["kind"] == "detector" and "detector.safetensors" in manifest["files"]
    loaded = load_detector(out, model)
    values, _, _ = collect_representations(model, frame)
    np.testing.assert_array_equal(loaded.risk(values), full_detector.risk(values))
    assert loaded.minority == ["b"] and loaded.layer == "blocks.0" and loaded.mode == "full"
    assert loaded.tau == 0.5 and loaded.report["tpr"] == full_detector.report["tpr"]
    assert loaded.base["sha256"] == model.digest
    with pytest.raises(errors.OutputExistsError):
        full_detector.save(out)
    full_detector.save(out, force=True)


def test_load_detector_refuses_another_base_model(full_detector, frame, tmp_path):
    out = tmp_path / "det"
    full_detector.save(out)
    other = save_model(frame, tmp_path / "other", seed=1)
    assert other.digest != full_detector.base["sha256"]
    with pytest.raises(errors.ModelError, match="retrain the detector"):
        load_detector(out, other)
    load_detector(out)  # without a model to check against, it loads


def test_load_detector_refuses_edited_weights(full_detector, model, tmp_path):
    out = tmp_path / "det"
    full_detector.save(out)
    w = out / "detector.safetensors"
    w.write_bytes(w.read_bytes()[:-8])
    with pytest.raises(errors.ModelError, match="sha256"):
        load_detector(out, model)


def test_linear_detector_fits_saves_and_loads(frame, model, tmp_path):
    """``hidden=0``: logistic regression on the standardised tap (the cheapest to gate with)."""
    det = fit_detector(frame, model, group="grp", minority=["b"],
                       config=DetectorConfig(epochs=20, batch_size=256, hidden=0))
    assert [type(m).__name__ for m in det.module.mlp] == ["Linear"]
    assert det.report["tpr"] - det.report["fpr"] >= 0.6, det.report  # weaker than the MLP's, far from chance
    det.save(tmp_path / "det")
    loaded = load_detector(tmp_path / "det", model)
    values, _, _ = collect_representations(model, frame)
    np.testing.assert_array_equal(loaded.risk(values), det.risk(values))
    with pytest.raises(errors.UsageError, match="hidden"):
        DetectorConfig(hidden=-1)


@pytest.mark.parametrize("hidden", [0, 8])
def test_folded_risk_matches_the_forward_and_follows_weight_updates(hidden):
    """Eval-mode risk folds the standardisation into the first layer; the fold is refreshed
    whenever a weight or the standardisation changes."""
    torch.manual_seed(0)
    det = BiasDetector(6, hidden)
    det.set_standardisation(torch.randn(6), torch.rand(6) + 0.5)
    det.eval()
    h = torch.randn(50, 6) * 3
    torch.testing.assert_close(det.risk(h), torch.sigmoid(det(h)), atol=1e-6, rtol=0)
    with torch.no_grad():
        det.mlp[0].weight.mul_(-2.0)  # an in-place update, as an optimiser step makes
    torch.testing.assert_close(det.risk(h), torch.sigmoid(det(h)), atol=1e-6, rtol=0)
    det.set_standardisation(torch.zeros(6), torch.ones(6))
    torch.testing.assert_close(det.risk(h), torch.sigmoid(det(h)), atol=1e-6, rtol=0)
    det.load_state_dict(BiasDetector(6, hidden).state_dict())
    torch.testing.assert_close(det.risk(h), torch.sigmoid(det(h)), atol=1e-6, rtol=0)
