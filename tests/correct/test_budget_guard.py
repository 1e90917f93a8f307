"""The step budget, the cell-balanced batches, the cross-fitted folds and the guard's noise bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairfix import errors
from fairfix.correct.config import CorrectConfig
from fairfix.correct.crossfit import fold_rows, split_rows
from fairfix.correct.loop import Rows, batches, eval_steps
from fairfix.correct.select import choose, simultaneous_bounds, sweep


def test_budget_is_steps_whatever_the_table_size():
    cfg = CorrectConfig(steps=300, batch_size=64)
    assert cfg.budget(100) == cfg.budget(1_000_000) == 300
    # the older epoch budget turns into steps over the corrected rows (at least one candidate)
    assert CorrectConfig(epochs=8, batch_size=256, eval_every=50).budget(1200) == 50
    assert CorrectConfig(epochs=8, batch_size=256, eval_every=10).budget(1200) == 40
    assert eval_steps(400, 50) == [50, 100, 150, 200, 250, 300, 350, 400]
    assert eval_steps(120, 50) == [50, 100, 120]


@pytest.mark.parametrize("field, value", [("steps", 0), ("folds", 1), ("objective", "hinge"),
                                          ("balance", "none"), ("val_fraction", 1.0), ("eval_every", 0)])
def test_bad_options_name_the_field_and_value(field, value):
    with pytest.raises(errors.UsageError, match=f"{field}={value!r}"):
        CorrectConfig(**{field: value})


def test_balanced_batches_draw_every_cell_alike():
    cells = np.array([0] * 900 + [1] * 90 + [2] * 10)  # a shortcut cell of 10 rows among 1,000
    rows = Rows(np.arange(1000), cells, np.ones(1000, bool))
    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat([pos for pos, w in batches(rows, CorrectConfig(batch_size=64), 300, gen)])
    share = np.bincount(cells[drawn.numpy()], minlength=3) / len(drawn)
    np.testing.assert_allclose(share, [1 / 3, 1 / 3, 1 / 3], atol=0.02)
    # "weight": uniform passes over the rows, the loss weights balance the cells instead
    gen = torch.Generator().manual_seed(0)
    got = list(batches(rows, CorrectConfig(batch_size=100, balance="weight"), 10, gen))
    seen = torch.cat([pos for pos, _ in got]).numpy()
    assert sorted(seen.tolist()) == list(range(1000))  # ten batches of 100: one pass, every row once
    count = np.bincount(cells)
    for pos, w in got:  # a row's weight is 1 / (its cell's size), up to the batch's scale
        scaled = w.numpy() * count[cells[pos.numpy()]]
        np.testing.assert_allclose(scaled, scaled[0], rtol=1e-5)


def test_folds_hold_every_row_out_once_and_deal_each_stratum_evenly():
    strata = np.array([0] * 50 + [1] * 7 + [2] * 3)
    folds = fold_rows(strata, 5, seed=0)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(60))
    for train, h in folds:
        assert not set(train) & set(h) and len(train) + len(h) == 60
        assert np.bincount(strata[h], minlength=3)[0] == 10  # the big stratum: 10 per fold
    per_fold = np.array([np.bincount(strata[h], minlength=3) for _, h in folds])
    assert per_fold[:, 1].max() - per_fold[:, 1].min() <= 1 and per_fold[:, 2].max() <= 1
    assert fold_rows(strata, 5, seed=0)[2][1].tolist() == folds[2][1].tolist()  # seeded
    tr, va = split_rows(60, 0.2, strata, seed=0)
    assert len(va) == 10 + 1 + 1 and not set(tr) & set(va)


def _cells(n_per_cell: int, base_right: float, adapted_right: float, rng: np.random.Generator):
    """Two groups x two classes; cell (1, 1) is the worst, the adapter changes only it."""
    y = np.tile(np.repeat([0, 1], n_per_cell), 2)
    g = np.repeat([0, 1], 2 * n_per_cell)
    base = y.copy()
    worst = (g == 1) & (y == 1)
    ids = np.flatnonzero(worst)
    base[ids[: int(round(len(ids) * (1 - base_right)))]] = 0
    adapted = base.copy()
    adapted[ids[: int(round(len(ids) * (1 - adapted_right)))]] = 0
    adapted[ids[int(round(len(ids) * (1 - adapted_right))):]] = 1
    return y, g, base, adapted


def _bound(adapted, base, y, g, level_se=1.0):
    b = simultaneous_bounds((adapted == y)[None], base == y, y, g, 2, level_se=level_se,
                            resamples=400, seed=0)
    return float(b["wga"][0]), b["worst_cell_rows"]


def test_the_bound_separates_a_real_gain_from_noise():
    rng = np.random.default_rng(0)
    # +30 points on a worst cell of 200 rows: a gain far above its noise
    y, g, base, adapted = _cells(200, 0.5, 0.8, rng)
    lower, n_worst = _bound(adapted, base, y, g)
    assert n_worst == 200 and 0.2 < lower < 0.3
    # +10 points on a worst cell of 10 rows (one row changed): within its noise
    y, g, base, adapted = _cells(10, 0.5, 0.6, rng)
    lower, n_worst = _bound(adapted, base, y, g)
    assert n_worst == 10 and lower <= 0
    # +50 points on a cell of 4 rows: its resamples barely vary, too little evidence whatever the gain
    y, g, base, adapted = _cells(4, 0.5, 1.0, rng)
    assert _bound(adapted, base, y, g)[0] == -np.inf
    # a harder bound (2 SE) is never above a softer one
    y, g, base, adapted = _cells(40, 0.5, 0.7, rng)
    assert _bound(adapted, base, y, g, 2.0)[0] <= _bound(adapted, base, y, g, 0.5)[0]


def test_the_band_covers_the_best_of_many_noise_candidates():
    """Many settings that change rows at random: the best one's point gain is luck, and the band knows it."""
    rng = np.random.default_rng(3)
    y, g, base, _ = _cells(30, 0.5, 0.5, rng)
    flips = rng.random((300, len(y))) < 0.15  # each candidate flips 15% of the rows at random
    right = np.where(flips, base != y, base == y)
    lower = simultaneous_bounds(right, base == y, y, g, 2, level_se=1.0, resamples=400, seed=0)["wga"]
    acc = np.array([[right[k][(g == a) & (y == c)].mean() for a in (0, 1) for c in (0, 1)] for k in range(300)])
    base_acc = min((base == y)[(g == a) & (y == c)].mean() for a in (0, 1) for c in (0, 1))
    gains = acc.min(1) - base_acc
    assert gains.max() > 0.05  # the luckiest candidate looks like a real gain on its own
    assert (lower <= 0).all()  # but none is above the band
    # one candidate alone gets a tighter bound than inside a band of 300
    alone = simultaneous_bounds(right[[int(gains.argmax())]], base == y, y, g, 2, level_se=1.0,
                                resamples=400, seed=0)
    assert alone["wga"][0] > lower[int(gains.argmax())]


@pytest.mark.parametrize("n_per_cell, ships", [(200, True), (10, False)])
def test_the_guard_ships_a_gain_only_when_it_beats_its_noise(n_per_cell, ships):
    rng = np.random.default_rng(1)
    gain = 0.3 if ships else 0.1
    y, g, base, adapted = _cells(n_per_cell, 0.5, 0.5 + gain, rng)
    cfg = CorrectConfig(strengths=(1.0,), guard_se=1.0)
    adapted_all = {"all": adapted[None, None, :]}
    risk = np.ones(len(y))
    kw = {"base_pred": base, "y": y, "g": g, "risk": risk, "n_classes": 2}
    rows = sweep(adapted_all, [50], cfg, gates=[("all", None)], positive=1, **kw)
    from fairfix.correct.plan import guard_metrics

    base_m = guard_metrics(base, y, g, 2, 1)
    choice = choose(rows, base_m, cfg, adapted=adapted_all, budgets=[50], **kw)
    assert rows[0]["accuracy_ok"] and rows[0]["worst_group_accuracy"] > base_m["worst_group_accuracy"]
    assert (choice is not None) is ships
    assert rows[0]["worst_cell_rows"] == n_per_cell
