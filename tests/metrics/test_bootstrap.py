"""Percentile bootstrap from confusion counts: reproducible, sensible, well calibrated."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import fairfix
from fairfix.metrics import rates
from fairfix.metrics.bootstrap import percentile_interval, resample_counts
from fairfix.metrics.counts import ConfusionCounts
from fairfix.report.audit import build_report


def _frame(seed: int = 0, n: int = 1500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.75, y, 1 - y)
    return pd.DataFrame({"y": y, "p": p, "g": rng.choice(["a", "b", "c"], n)})


def _cis(report: fairfix.AuditReport) -> tuple[dict, list]:
    return report.summary_ci, [g["ci"] for g in report.groups]


def _counts(table: list) -> ConfusionCounts:
    c = np.array(table, dtype=np.int64)
    groups = tuple((f"g{i}",) for i in range(c.shape[0]))
    return ConfusionCounts(("g",), groups, (0, 1), (0, 1), c)


def test_same_seed_same_intervals_other_seed_other_intervals() -> None:
    df = _frame()
    first = fairfix.audit(df, label="y", pred="p", group="g", bootstrap=300, seed=7)
    again = fairfix.audit(df, label="y", pred="p", group="g", bootstrap=300, seed=7)
    other = fairfix.audit(df, label="y", pred="p", group="g", bootstrap=300, seed=8)
    assert first.summary_ci  # intervals were computed
    assert set(first.summary_ci) == set(rates.SUMMARY_METRICS)
    assert _cis(first) == _cis(again)
    assert _cis(first) != _cis(other)
    assert first.summary == other.summary  # point values do not depend on the seed
    assert first.settings["seed"] == 7 and first.settings["bootstrap"] == 300


def test_resample_counts_is_reproducible_with_a_seeded_generator() -> None:
    c = _counts([[[40, 10], [5, 45]], [[3, 1], [2, 4]]]).counts
    a = resample_counts(c, 50, np.random.default_rng(1))
    b = resample_counts(c, 50, np.random.default_rng(1))
    d = resample_counts(c, 50, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, d)


def test_resample_counts_preserves_group_sizes_and_support() -> None:
    c = _counts([[[40, 10], [5, 45]], [[3, 0], [0, 4]], [[0, 0], [0, 0]], [[0, 7], [0, 0]]]).counts
    reps = resample_counts(c, 500, np.random.default_rng(0))
    assert reps.shape == (500, *c.shape)
    assert reps.dtype == np.int64
    # Every replicate keeps each group's row count (resampling is within groups).
    sizes = np.broadcast_to(c.sum(axis=(1, 2)), (500, 4))
    np.testing.assert_array_equal(reps.sum(axis=(2, 3)), sizes)
    # Cells that are empty stay empty; a one-cell group never moves.
    assert not reps[:, c == 0].any()
    assert (reps[:, 3] == c[3]).all()
    # The replicates are centred on the observed counts.
    np.testing.assert_allclose(reps.mean(axis=0), c, atol=1.5)
    assert reps[:, 0].std(axis=0).max() > 0


def test_intervals_contain_the_point_estimate_for_large_groups() -> None:
    df = _frame(seed=3, n=3000)
    report = fairfix.audit(df, label="y", pred="p", group="g", bootstrap=500, seed=0)
    for g in report.groups:
        assert g["n"] > 800 and not g["small"]
        for metric in ("accuracy", "tpr", "fpr", "selection_rate"):
            lo, hi = g["ci"][metric]
            assert lo < g[metric] < hi, (g["group"], metric, lo, g[metric], hi)
            assert hi - lo < 0.15  # ~1,000 rows: a few points wide, not vacuous
    for metric in ("accuracy", "demographic_parity_ratio"):
        lo, hi = report.summary_ci[metric]
        assert lo <= report.summary[metric] <= hi


def test_wider_level_gives_wider_intervals() -> None:
    df = _frame(seed=4, n=600)
    narrow = fairfix.audit(df, label="y", pred="p", group="g", bootstrap=400, ci=0.5, seed=0)
    wide = fairfix.audit(df, label="y", pred="p", group="g", bootstrap=400, ci=0.99, seed=0)
    for gn, gw in zip(narrow.groups, wide.groups, strict=True):
        (nlo, nhi), (wlo, whi) = gn["ci"]["accuracy"], gw["ci"]["accuracy"]
        assert wlo <= nlo and nhi <= whi and (whi - wlo) > (nhi - nlo)


def test_coverage_of_group_accuracy_on_simulated_binomial() -> None:
    """The 95% interval covers the true accuracy in roughly 95% of simulated datasets."""
    rng = np.random.default_rng(2024)
    true_acc, n, sims = 0.8, 200, 200
    covered = 0
    for _ in range(sims):
        # Group "g0": n rows, each correct with probability 0.8; a second group alongside.
        correct = rng.binomial(n, true_acc)
        pos_correct = rng.binomial(correct, 0.5)
        pos_wrong = rng.binomial(n - correct, 0.5)
        g0 = [[correct - pos_correct, n - correct - pos_wrong], [pos_wrong, pos_correct]]
        g1 = [[30, 10], [10, 30]]
        report = build_report(
            _counts([g0, g1]), label="y", positive=1, positive_source=None,
            n_bootstrap=1000, ci=0.95, seed=int(rng.integers(2**31)),
        )
        lo, hi = report.groups[0]["ci"]["accuracy"]
        covered += lo <= true_acc <= hi
    assert 0.88 <= covered / sims <= 0.99, covered / sims


def test_percentile_interval_ignores_nan_replicates() -> None:
    reps = np.array([[0.1, np.nan], [0.2, np.nan], [0.3, np.nan], [np.nan, np.nan], [0.4, np.nan]])
    lo, hi = percentile_interval(reps, 0.5)
    assert lo[0] == pytest.approx(np.quantile([0.1, 0.2, 0.3, 0.4], 0.25))
    assert hi[0] == pytest.approx(np.quantile([0.1, 0.2, 0.3, 0.4], 0.75))
    assert math.isnan(lo[1]) and math.isnan(hi[1])


def test_undefined_rate_has_undefined_interval() -> None:
    # Group g0 has no positives: its TPR and the TPR interval are NaN, never 0.
    report = build_report(
        _counts([[[20, 5], [0, 0]], [[20, 5], [6, 19]]]), label="y", positive=1,
        positive_source=None, n_bootstrap=200, seed=0,
    )
    g0 = report.groups[0]
    assert math.isnan(g0["tpr"])
    assert all(math.isnan(v) for v in g0["ci"]["tpr"])
    assert not any(math.isnan(v) for v in g0["ci"]["fpr"])
    # The TPR gap has a single group left, so it is 0 in every replicate.
    assert report.summary["tpr_gap"] == 0.0
    assert report.summary_ci["tpr_gap"] == (0.0, 0.0)
