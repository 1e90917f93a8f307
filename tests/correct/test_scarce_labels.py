"""Scarce group labels: partial labels use every row, mode none reads no group label (issue 22)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fairfix.cli import app
from fairfix.correct import CorrectConfig
from fairfix.correct.fairnet import guard_cells
from fairfix.correct.run import _fill_codes, correct
from fairfix.correct.select import choose, simultaneous_bounds, sweep
from fairfix.detect.fit import DetectorConfig, neighbour_pseudo_labels, otsu
from fairfix.models import load_model
from fairfix.models.tabular import TrainConfig, train_tabular

runner = CliRunner()
FAST = {"steps": 40, "eval_every": 20, "batch_size": 64, "folds": 3, "guard_bootstrap": 100, "seed": 0}


def shortcut_frame(n: int, agree: float, seed: int) -> pd.DataFrame:
    """A tabular shortcut: ``cue`` (the group, visible in x1) agrees with the label on ``agree`` of the rows."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    cue = np.where(rng.random(n) < agree, y, ~y)
    x0 = (2 * y - 1) * 0.6 + rng.normal(size=n)  # the real signal, weaker than the cue
    x1 = (2 * cue - 1) * 2.0 + rng.normal(size=n) * 0.3
    return pd.DataFrame({"x0": x0, "x1": x1, "x2": rng.normal(size=n), "grp": np.where(cue, "a", "b"),
                         "y": np.where(y, "yes", "no")})


@pytest.fixture(scope="module")
def shortcut(tmp_path_factory):
    base_rows, rows = shortcut_frame(600, 0.9, 0), shortcut_frame(500, 0.9, 1)
    model, info = train_tabular(base_rows, label="y", features=["x0", "x1", "x2"],
                                config=TrainConfig(hidden=[16, 8], epochs=40, seed=0))  # takes the shortcut
    path = tmp_path_factory.mktemp("sc") / "model"
    model.save(path, config={"hidden": [16, 8], "dropout": 0.1}, training=info)
    return rows, path


def _run(frame, path, group, mode="auto", **kw):
    return correct(frame, load_model(path), label="y", group=group,
                   detector_config=DetectorConfig(mode=mode, epochs=5, seed=0), config=CorrectConfig(**FAST, **kw))


def test_mode_none_reads_no_group_label(shortcut):
    """No group column, a garbage one, or the real one with --mode none: the same bundle, bit for bit."""
    frame, path = shortcut
    inputs = load_model(path).encode(frame)
    runs = []
    rng = np.random.default_rng(7)
    garbage = frame.assign(grp=rng.choice(["p", "q", "r", None], len(frame)))
    for data, group, mode in ((frame.drop(columns=["grp"]), None, "auto"), (garbage, "grp", "none"),
                              (frame, "grp", "none")):
        corrected, res = _run(data, path, group, mode)
        with torch.no_grad():
            runs.append((corrected.forward(inputs), res))
    for logits, res in runs[1:]:
        assert torch.equal(logits, runs[0][0])
        assert res["record"]["chosen"] == runs[0][1]["record"]["chosen"]
        assert [r["worst_group_accuracy"] for r in res["record"]["sweep"]] == \
               [r["worst_group_accuracy"] for r in runs[0][1]["record"]["sweep"]]
    rec, doc = runs[0][1]["record"], runs[0][1]["compare"]
    assert rec["evidence"]["groups"]["kind"] == "pseudo" and rec["evidence"]["groups"]["labelled_rows"] == 0
    assert doc["guard_read"].startswith("the guard read no group labels")
    assert doc["before"]["group_columns"] == ["pseudo_group"]  # no group column: audited by the pseudo-groups
    assert runs[2][1]["compare"]["before"]["group_columns"] == ["grp"]  # given, it is read for the audits only
    # without group labels the adapter is on for every row or off: a gate learnt from pseudo-labels is not offered
    assert {r["gate"] for r in rec["sweep"]} == {"all"}


def test_mode_none_finds_the_shortcut_cells(shortcut):
    frame, path = shortcut
    corrected, res = _run(frame.drop(columns=["grp"]), path, None)
    pseudo = corrected.detector.pseudo
    conflict = (frame["grp"] == "a").to_numpy() != (frame["y"] == "yes").to_numpy()
    # the within-class clusters the base serves worse are the rows whose cue disagrees with the label
    assert pseudo[conflict].mean() > 0.9 and pseudo[~conflict].mean() < 0.05
    # the guard's cells are (label, pseudo-group): its smallest is the smallest pseudo-cell
    y = frame["y"].to_numpy()
    cells = [int(((pseudo == p) & (y == c)).sum()) for p in (0, 1) for c in ("no", "yes")]
    assert res["record"]["evidence"]["smallest_cell_rows"] == min(cells)


def test_partial_labels_train_on_every_row_and_the_guard_reads_the_detectors_groups(shortcut):
    frame, path = shortcut
    part = frame.copy()
    part["grp"] = part["grp"].astype(object)
    hidden = np.random.default_rng(0).random(len(part)) >= 0.1
    part.loc[hidden, "grp"] = None
    _, res = _run(part, path, "grp")
    rec = res["record"]
    labelled = int((~hidden).sum())
    assert rec["evidence"]["groups"] == {**rec["evidence"]["groups"], "kind": "labels+detector",
                                         "labelled_rows": labelled, "detector_rows": len(part) - labelled}
    assert rec["train_rows"] > labelled  # rows without a group label trained the adapter
    labelled_cells = part[~hidden].groupby(["grp", "y"]).size()
    assert labelled_cells.min() < 10 <= rec["evidence"]["smallest_cell_rows"]
    assert res["compare"]["guard_read"].startswith(f"the guard read the group labels of {labelled} rows and the "
                                                   "detector's groups")


def test_guard_cells_fill_unknown_groups_from_the_flags_only_when_asked():
    flagged = np.array([1, 0, 1, 0, 1])
    data = {"group": np.array([0, 1, -1, -1, 1]), "minority": np.array([1, 0, -1, -1, 0])}
    g, m, read = guard_cells(data, flagged)
    assert g.tolist() == [0, 1, -1, -1, 1] and m.tolist() == [1, 0, 1, 0, 0] and read["kind"] == "labels"
    g, _, read = guard_cells({**data, "fill_group": (0, 1)}, flagged)
    assert g.tolist() == [0, 1, 0, 1, 1] and (read["labelled_rows"], read["detector_rows"]) == (3, 2)
    g, m, read = guard_cells({"group": None, "pseudo": np.array([1.0, 0.0, np.nan, 0.0, 1.0])}, flagged)
    assert g.tolist() == m.tolist() == [1, 0, 1, 0, 1] and read["kind"] == "pseudo"


def test_a_detector_at_chance_fills_no_guard_cell():
    det = SimpleNamespace(minority=["b"], report={"tpr": 0.52, "fpr": 0.50})
    assert _fill_codes(det, ["a", "b"]) is None
    det.report = {"tpr": 0.9, "fpr": 0.1}
    assert _fill_codes(det, ["a", "b"]) == (1, 0)
    assert _fill_codes(det, ["a", "b", "c"]) == (1, 3)  # the rest of three groups: a cell of its own
    det.minority = ["a", "b"]
    assert _fill_codes(det, ["a", "b", "c"]) == (3, 2)
    det.report = {"tpr": None, "fpr": None}
    assert _fill_codes(det, ["a", "b"]) is None


def test_neighbour_pseudo_labels_mark_the_region_the_base_serves_worse():
    rng = np.random.default_rng(0)
    n = 400
    y = np.repeat([0, 1], n // 2)
    sub = rng.random(n) < 0.15  # a subclass in each class, far from the rest of it
    x = rng.normal(size=(n, 6)) + 6.0 * sub[:, None]
    right = np.where(sub, rng.random(n) < 0.5, rng.random(n) < 0.97)  # the base errs on half the subclass
    proba = np.where(right, 0.9, 0.2)  # the base's probability of the true class
    p = np.stack([1 - proba, proba], 1)
    p[y == 0] = p[y == 0][:, ::-1]
    got, info = neighbour_pseudo_labels(torch.as_tensor(x, dtype=torch.float32), None, np.arange(n), p, y, 20, 0)
    # every row of the subclass, the ones the base got right too, and none of the rest
    assert got.tolist() == sub.astype(float).tolist()
    assert [c["pseudo_minority"] for c in info] == [int(sub[y == c].sum()) for c in (0, 1)]
    assert otsu(np.array([0.1, 0.12, 0.11, 0.6, 0.7])) == pytest.approx((0.12 + 0.6) / 2)
    assert otsu(np.array([0.3, 0.3])) == 0.3  # one value: nothing above the cut


def test_noise_stays_off_on_pseudo_cells():
    """An adapter that flips rows at random cannot pass on pseudo-cells (or any cells) however many try."""
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    g = (rng.random(n) < 0.2).astype(np.int64)  # pseudo-groups
    base = np.where(rng.random(n) < np.where(g == 1, 0.6, 0.95), y, 1 - y)
    noise = np.stack([np.where(rng.random(n) < 0.1, 1 - base, base) for _ in range(40)])  # 40 noise candidates
    bounds = simultaneous_bounds(noise == y, base == y, y, g, 2, level_se=1.0, resamples=400, seed=0)
    assert (bounds["wga"] <= 0).all()
    cfg = CorrectConfig(strengths=(1.0,), guard_bootstrap=400)
    adapted = {"all": noise[:, None, :]}
    rows = sweep(adapted, list(range(1, 41)), cfg, base_pred=base, y=y, g=g, risk=np.zeros(n),
                 gates=[("all", None)], n_classes=2, positive=None)
    from fairfix.correct.plan import guard_metrics

    pick = choose(rows, guard_metrics(base, y, g, 2, None), cfg, adapted=adapted, budgets=list(range(1, 41)),
                  base_pred=base, y=y, g=g, risk=np.zeros(n), n_classes=2)
    assert pick is None


def test_correct_cli_without_group_says_what_the_guard_read(shortcut, tmp_path):
    frame, path = shortcut
    frame.drop(columns=["grp"]).to_csv(tmp_path / "rows.csv", index=False)
    res = runner.invoke(app, ["correct", str(tmp_path / "rows.csv"), "--model", str(path), "--label", "y",
                              "--steps", "40", "--eval-every", "20", "--folds", "3", "--out", str(tmp_path / "b"),
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["evidence"]["groups"]["kind"] == "pseudo"
    assert "the guard read no group labels" in res.stderr and doc["guard_read"] in " ".join(res.stderr.split())
    res = runner.invoke(app, ["correct", str(tmp_path / "rows.csv"), "--model", str(path), "--label", "y",
                              "--mode", "full", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "--mode full needs a sensitive column (--group COL)" in res.stderr
    assert not (tmp_path / "c").exists()


def test_benchmark_reports_the_detector_against_the_truth():
    """shortcut.py's detector figures: TPR / FPR / AUC against the colour and the shortcut cells, on a made-up case."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from shortcut import detector_quality

    g = np.array([1, 1, 1, 1, 0, 0, 0, 0])  # red
    y = np.array([1, 1, 0, 0, 0, 0, 1, 1])
    risk = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.3])

    class Base:
        def representation(self, inputs, layer):
            return SimpleNamespace(values=inputs["x"])

    det = SimpleNamespace(risk=lambda v: v.numpy(), layer="x", tau=0.5, minority=["red"], pseudo=None)
    out = detector_quality(SimpleNamespace(detector=det), Base(), torch.as_tensor(risk), y, g, None, y, g)
    assert out["group"]["tpr"] == 0.75 and out["group"]["fpr"] == 0.25  # red flagged 3/4, green 1/4
    assert out["group"]["auc"] == pytest.approx(14 / 16)
    assert out["cells"]["tpr"] == 0.25 and out["cells"]["fpr"] == 0.75  # shortcut cells: (red, 0), (green, 1)


def test_mode_none_on_a_base_without_errors_says_there_is_nothing_to_find(monkeypatch):
    import fairfix.detect.fit as fit
    from fairfix import errors

    frame = pd.DataFrame({"x": np.arange(40.0), "y": ["no", "yes"] * 20})
    y = (frame["y"] == "yes").to_numpy()
    proba = np.stack([~y, y], 1).astype(float)  # always right, fully sure
    monkeypatch.setattr(fit, "_representations", lambda model, fr, layer, progress: (
        torch.as_tensor(fr[["x"]].to_numpy().copy()), None, proba))
    base = SimpleNamespace(input_columns=["x"], classes=["no", "yes"], default_tap_layer="t")
    with pytest.raises(errors.DataError, match="single out no rows within any class"):
        fit.fit_detector(frame, base, label="y", config=DetectorConfig(mode="none", epochs=1))


def test_checkpoint_key_of_mode_none_does_not_depend_on_the_risk_callable():
    from fairfix.correct.checkpoint import run_key

    model = SimpleNamespace(digest="abc")
    det = SimpleNamespace(module=torch.nn.Linear(2, 1), layer="t", tau=0.5, minority=[])
    data = {"y": np.arange(4), "group": None, "pseudo": np.array([0.0, 1.0, 0.0, 1.0])}
    keys = [run_key(model, det, {**data, "oof_risk": lambda parts: parts}, None, CorrectConfig()) for _ in range(2)]
    assert keys[0] == keys[1]
    other = run_key(model, det, {**data, "pseudo": np.array([1.0, 1.0, 0.0, 1.0])}, None, CorrectConfig())
    assert other["data"] != keys[0]["data"]  # the pseudo-labels are part of what the checkpoint was for


def test_random_labels_stay_off_without_group_labels(tmp_path):
    """Labels that nothing predicts: the pseudo-cells hold no gain beyond noise, and the adapter ships off."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"x0": rng.normal(size=700), "x1": rng.normal(size=700), "x2": rng.normal(size=700),
                          "y": rng.choice(["no", "yes"], 700)})
    model, info = train_tabular(frame.iloc[:300], label="y", features=["x0", "x1", "x2"],
                                config=TrainConfig(hidden=[16, 8], epochs=40, seed=0))
    corrected, res = correct(frame.iloc[300:].reset_index(drop=True), model, label="y", group=None,
                             detector_config=DetectorConfig(epochs=5, seed=0), config=CorrectConfig(**FAST))
    assert res["record"]["evidence"]["groups"]["kind"] == "pseudo"
    assert not corrected.enabled and res["record"]["guard"]["reasons"]
    # some settings raised the worst pseudo-cell out of fold, by luck: the band is what kept them off
    base = res["record"]["base_validation"]["worst_group_accuracy"]
    assert any(r["worst_group_accuracy"] > base for r in res["record"]["sweep"])
