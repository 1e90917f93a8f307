"""Point values against Fairlearn's MetricFrame, the oracle of DESIGN.md section 2.

Fairlearn reports a rate of 0 (with a warning) where it is undefined, e.g. the TPR of a
group without positives; fairfix reports NaN and leaves such groups out of the gaps.  So
per-group values are compared where the rate exists, NaN is asserted where it does not,
and the gaps are compared with gaps computed from Fairlearn's per-group values restricted
to the groups where each rate exists.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
)
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, recall_score

import fairfix
from fairfix.metrics import counts_from_arrays, rates

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

TOL = 1e-9
HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Small vocabularies so that intersectional groups repeat, and some groups end up with
# no positives and/or no negatives.  Mixed value types (str / int) per column.
GROUP_VOCABS = {
    "sex": ["Female", "Male", "Other"],
    "race": [0, 1, 2],
    "region": ["north", "south"],
}


@st.composite
def frames(draw: Any, classes: int = 2) -> pd.DataFrame:
    """A data frame with columns y, p and 1-3 group columns."""
    n = draw(st.integers(min_value=classes, max_value=24))
    cols = draw(st.sampled_from([["sex"], ["sex", "race"], ["sex", "race", "region"], ["race"]]))
    data: dict[str, list[Any]] = {}
    for col in cols:
        vocab = GROUP_VOCABS[col][: draw(st.integers(1, len(GROUP_VOCABS[col])))]
        data[col] = draw(st.lists(st.sampled_from(vocab), min_size=n, max_size=n))
    label = st.integers(0, classes - 1)
    data["y"] = draw(st.lists(label, min_size=n, max_size=n))
    data["p"] = draw(st.lists(label, min_size=n, max_size=n))
    assume(len(set(data["y"])) == classes)
    return pd.DataFrame(data)


def group_cols(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in ("y", "p")]


def by_group(mf: MetricFrame, cols: list[str]) -> dict[tuple[Any, ...], pd.Series]:
    """Fairlearn's per-group rows keyed like fairfix's groups, empty combinations dropped."""
    table = mf.by_group.reset_index()
    out = {}
    for _, row in table.iterrows():
        if row["count"] == 0 or pd.isna(row["count"]):
            continue
        key = tuple(v.item() if isinstance(v, np.generic) else v for v in row[cols])
        out[key] = row
    return out


def pos_neg(df: pd.DataFrame, cols: list[str]) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Positives and negatives (y == 1 / y != 1) per group."""
    out = {}
    for key, sub in df.groupby(cols):
        key = tuple(v.item() if isinstance(v, np.generic) else v for v in key)
        pos = int((sub["y"] == 1).sum())
        out[key] = (pos, len(sub) - pos)
    return out


def restricted_gap(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return max(vals) - min(vals) if vals else math.nan


def assert_close(actual: float | None, expected: float, what: str) -> None:
    if expected is None or math.isnan(expected):
        assert actual is None or math.isnan(actual), f"{what}: {actual} != NaN"
    else:
        assert actual is not None, f"{what}: None != {expected}"
        assert abs(actual - expected) <= TOL, f"{what}: {actual} != {expected}"


def binary_metric_frame(df: pd.DataFrame, cols: list[str]) -> MetricFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MetricFrame(
            metrics={
                "count": count,
                "accuracy": accuracy_score,
                "tpr": lambda y, p: recall_score(y, p, zero_division=0),
                "fpr": false_positive_rate,
                "selection_rate": selection_rate,
            },
            y_true=df["y"],
            y_pred=df["p"],
            sensitive_features=df[cols],
        )


# Always run: groups with no positives, with no negatives, and a one-row group.
NO_POS_NO_NEG = pd.DataFrame(
    {
        "sex": ["Female"] * 4 + ["Male"] * 4 + ["Other"],
        "race": [0, 0, 1, 1, 0, 0, 1, 1, 2],
        "y": [0, 0, 1, 1, 1, 0, 1, 0, 1],
        "p": [1, 0, 1, 0, 1, 1, 0, 0, 0],
    }
)


@HYPOTHESIS
@given(frames())
@example(NO_POS_NO_NEG)
@example(NO_POS_NO_NEG[["sex", "y", "p"]].assign(y=[0, 0, 0, 0, 1, 0, 1, 0, 1]))
def test_binary_point_values_match_metric_frame(df: pd.DataFrame) -> None:
    cols = group_cols(df)
    report = fairfix.audit(df, label="y", pred="p", group=cols, bootstrap=0)
    mf = binary_metric_frame(df, cols)
    fl = by_group(mf, cols)

    fx_groups = {tuple(g["group"][c] for c in cols): g for g in report.groups}
    assert set(fx_groups) == set(fl)
    tprs, fprs = [], []
    support = pos_neg(df, cols)
    for key, g in fx_groups.items():
        row = fl[key]
        has_pos, has_neg = (v > 0 for v in support[key])
        assert g["n"] == row["count"]
        assert_close(g["accuracy"], row["accuracy"], f"accuracy {key}")
        assert_close(g["selection_rate"], row["selection_rate"], f"selection_rate {key}")
        if has_pos:
            assert_close(g["tpr"], row["tpr"], f"tpr {key}")
            assert_close(g["fnr"], 1.0 - row["tpr"], f"fnr {key}")
        else:  # Fairlearn says 0; the rate is undefined
            assert row["tpr"] == 0.0
            assert math.isnan(g["tpr"]) and math.isnan(g["fnr"]), key
        if has_neg:
            assert_close(g["fpr"], row["fpr"], f"fpr {key}")
            assert_close(g["tnr"], 1.0 - row["fpr"], f"tnr {key}")
        else:
            assert row["fpr"] == 0.0
            assert math.isnan(g["fpr"]) and math.isnan(g["tnr"]), key
        tprs.append(row["tpr"] if has_pos else math.nan)
        fprs.append(row["fpr"] if has_neg else math.nan)

    s = report.summary
    tpr_gap, fpr_gap = restricted_gap(tprs), restricted_gap(fprs)
    assert_close(s["tpr_gap"], tpr_gap, "tpr_gap")
    assert_close(s["fpr_gap"], fpr_gap, "fpr_gap")
    assert_close(s["equalized_odds_difference"], float(np.fmax(tpr_gap, fpr_gap)), "eod")
    assert_close(s["equalized_odds_mean"], (tpr_gap + fpr_gap) / 2, "eod mean")
    assert_close(s["accuracy"], accuracy_score(df["y"], df["p"]), "accuracy")
    # Fairlearn's demographic_parity_difference / _ratio are exactly these two calls
    # (checked once against the functions themselves below, to keep this test fast).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dpd = mf.difference(method="between_groups")["selection_rate"]
        dpr = mf.ratio(method="between_groups")["selection_rate"]
    assert_close(s["demographic_parity_difference"], dpd, "dp difference")
    assert_close(s["demographic_parity_ratio"], dpr, "dp ratio")
    if not (any(map(math.isnan, tprs)) or any(map(math.isnan, fprs))):
        # Every rate exists: Fairlearn's own equalized_odds_difference applies as is.
        eod = equalized_odds_difference(df["y"], df["p"], sensitive_features=df[cols])
        assert_close(s["equalized_odds_difference"], eod, "eod (fairlearn)")


@HYPOTHESIS
@given(frames())
def test_counts_from_arrays_agree_with_audit_and_groupby(df: pd.DataFrame) -> None:
    cols = group_cols(df)
    report = fairfix.audit(df, label="y", pred="p", group=cols, bootstrap=0)
    cc = counts_from_arrays(df["y"], df["p"], {c: df[c] for c in cols})
    assert cc.groups == report.counts.groups
    assert cc.classes == report.counts.classes == (0, 1)
    np.testing.assert_array_equal(cc.counts, report.counts.counts)

    # Every cell equals a plain pandas count.
    sizes = df.groupby([*cols, "y", "p"]).size()
    expected = np.zeros_like(cc.counts)
    for idx, n in sizes.items():
        key = idx if isinstance(idx, tuple) else (idx,)
        g = cc.groups.index(tuple(v.item() if isinstance(v, np.generic) else v for v in key[:-2]))
        expected[g, key[-2], key[-1]] = n
    np.testing.assert_array_equal(cc.counts, expected)

    # The summary computed from these counts is the audit's (checked against Fairlearn above).
    point = rates.summary_arrays(cc.counts, [1], [0, 1])
    for key, value in point.items():
        assert_close(report.summary[key], float(value), key)


@settings(max_examples=40, deadline=None)
@given(frames(classes=3))
def test_multiclass_accuracy_and_worst_group(df: pd.DataFrame) -> None:
    cols = group_cols(df)
    report = fairfix.audit(df, label="y", pred="p", group=cols, bootstrap=0)
    assert report.task == "multiclass"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf = MetricFrame(
            metrics={"count": count, "accuracy": accuracy_score},
            y_true=df["y"],
            y_pred=df["p"],
            sensitive_features=df[cols],
        )
    fl = by_group(mf, cols)
    fx = {tuple(g["group"][c] for c in cols): g for g in report.groups}
    assert set(fx) == set(fl)
    for key, g in fx.items():
        assert_close(g["accuracy"], fl[key]["accuracy"], f"accuracy {key}")
    assert_close(
        report.summary["accuracy_gap"],
        restricted_gap([fl[k]["accuracy"] for k in fl]),
        "accuracy_gap",
    )

    # Worst-group accuracy: the minimum over (group, true label) cells, by hand.
    correct = (df["y"] == df["p"]).rename("correct")
    cells = correct.groupby([df[c] for c in cols] + [df["y"]]).mean()
    assert_close(report.summary["worst_group_accuracy"], float(cells.min()), "wga")
    wg = report.summary["worst_group"]
    key = tuple(wg["group"][c] for c in cols) + (wg["label"],)
    assert_close(float(cells.loc[key]), float(cells.min()), "worst cell")
    assert len(report.cells) == len(cells)

    # tpr/fpr gaps and demographic parity: the max over classes of one-vs-rest gaps,
    # each over the groups where the rate exists (pandas by hand).
    tpr_gaps, fpr_gaps, dp = [], [], []
    for k in sorted(df["y"].unique()):
        pos, sel = df["y"] == k, df["p"] == k
        keys = [df[c] for c in cols]
        tpr = sel[pos].groupby([c[pos] for c in keys]).mean()
        fpr = sel[~pos].groupby([c[~pos] for c in keys]).mean()
        tpr_gaps.append(tpr.max() - tpr.min())
        fpr_gaps.append(fpr.max() - fpr.min() if len(fpr) else math.nan)
        rate = sel.groupby(keys).mean()
        dp.append(rate.max() - rate.min())
    assert_close(report.summary["tpr_gap"], max(tpr_gaps), "tpr_gap")
    assert_close(report.summary["fpr_gap"], float(np.nanmax(fpr_gaps)), "fpr_gap")
    assert_close(report.summary["demographic_parity_difference"], max(dp), "dp")


def _label_variants(y: list[int]) -> dict[str, list[Any]]:
    return {
        "int": list(y),
        "bool": [bool(v) for v in y],
        "str": [">50K" if v else "<=50K" for v in y],
    }


def _numbers(report: fairfix.AuditReport) -> dict[str, Any]:
    """Every number of a report, without the label values themselves."""
    d = report.to_dict()
    return {
        "overall": d["overall"],
        "groups": d["groups"],
        "cells": [{k: v for k, v in c.items() if k != "label"} for c in d["cells"]],
        "summary": {k: v for k, v in d["summary"].items() if k != "worst_group"},
        "worst_group": (d["summary"]["worst_group"] or {}).get("group"),
    }


@settings(max_examples=30, deadline=None)
@given(frames())
def test_label_types_give_identical_numbers(df: pd.DataFrame) -> None:
    cols = group_cols(df)
    results = {}
    for name, ys in _label_variants(df["y"].tolist()).items():
        ps = _label_variants(df["p"].tolist())[name]
        frame = df.assign(y=ys, p=ps)
        report = fairfix.audit(frame, label="y", pred="p", group=cols, bootstrap=0)
        assert report.positive_label == {"int": 1, "bool": True, "str": ">50K"}[name]
        results[name] = report
    base = _numbers(results["int"])
    for name in ("bool", "str"):
        np.testing.assert_array_equal(results[name].counts.counts, results["int"].counts.counts)
        assert _numbers(results[name]) == base, name


def test_label_types_through_csv(tmp_path: Any) -> None:
    rng = np.random.default_rng(3)
    n = 300
    y = rng.integers(0, 2, n).tolist()
    p = rng.integers(0, 2, n).tolist()
    sex = rng.choice(["Female", "Male"], n)
    reports = []
    for name, ys in _label_variants(y).items():
        path = tmp_path / f"{name}.csv"
        pd.DataFrame({"y": ys, "p": _label_variants(p)[name], "sex": sex}).to_csv(path, index=False)
        reports.append(fairfix.audit(str(path), label="y", pred="p", group="sex", bootstrap=0))
    assert [r.positive_label for r in reports] == [1, True, ">50K"]
    for r in reports[1:]:
        assert _numbers(r) == _numbers(reports[0])


def test_nan_never_zero_for_undefined_rates() -> None:
    import json

    df = pd.DataFrame(
        {
            "y": [0, 0, 0, 1, 1, 0, 1],
            "p": [0, 1, 0, 1, 0, 1, 1],
            "g": ["nopos", "nopos", "nopos", "both", "both", "both", "noneg"],
        }
    )
    report = fairfix.audit(df, label="y", pred="p", group="g", bootstrap=50, seed=0)
    groups = {g["group"]["g"]: g for g in report.groups}
    assert math.isnan(groups["nopos"]["tpr"]) and math.isnan(groups["nopos"]["fnr"])
    assert groups["nopos"]["fpr"] == pytest.approx(1 / 3)
    assert math.isnan(groups["noneg"]["fpr"]) and math.isnan(groups["noneg"]["tnr"])
    assert groups["noneg"]["tpr"] == 1.0
    # Gaps skip the undefined values instead of treating them as 0.
    assert report.summary["tpr_gap"] == pytest.approx(0.5)  # both: 1/2, noneg: 1
    assert report.summary["fpr_gap"] == pytest.approx(1 - 1 / 3)  # both: 1, nopos: 1/3

    d = report.to_dict()
    text = json.dumps(d, allow_nan=False)  # raises on any NaN left in
    back = json.loads(text)
    nopos = next(g for g in back["groups"] if g["group"] == {"g": "nopos"})
    assert nopos["tpr"] is None and nopos["fnr"] is None
    assert nopos["ci"]["tpr"] == [None, None]
    noneg = next(g for g in back["groups"] if g["group"] == {"g": "noneg"})
    assert noneg["fpr"] is None and noneg["ci"]["fpr"] == [None, None]


def test_rates_undefined_everywhere_give_nan_summary() -> None:
    # One group, no positives anywhere in that group: every TPR undefined -> tpr_gap NaN.
    counts = np.array([[[3, 1], [0, 0]]])
    out = rates.summary_arrays(counts, [1], [0])
    assert math.isnan(out["tpr_gap"]) and math.isnan(out["equalized_odds_mean"])
    assert out["fpr_gap"] == 0.0
    assert out["equalized_odds_difference"] == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_fairness_scalars_against_fairlearn_functions(seed: int) -> None:
    """Fairlearn's own scalar functions, on data where every rate exists in every group."""
    rng = np.random.default_rng(seed)
    n = 400
    df = pd.DataFrame(
        {
            "y": rng.integers(0, 2, n),
            "p": rng.integers(0, 2, n),
            "sex": rng.choice(["Female", "Male"], n),
            "race": rng.choice([0, 1, 2], n),
        }
    )
    all_zero = df.assign(p=0)
    for data in (df, all_zero):
        sf = data[["sex", "race"]]
        s = fairfix.audit(data, label="y", pred="p", group=["sex", "race"], bootstrap=0).summary
        args = (data["y"], data["p"])
        assert_close(
            s["demographic_parity_difference"],
            demographic_parity_difference(*args, sensitive_features=sf),
            "dp difference",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dpr = demographic_parity_ratio(*args, sensitive_features=sf)
        assert_close(s["demographic_parity_ratio"], dpr, "dp ratio")  # NaN when all are 0
        assert_close(
            s["equalized_odds_difference"],
            equalized_odds_difference(*args, sensitive_features=sf),
            "eod",
        )
        assert_close(
            s["equalized_odds_mean"],
            equalized_odds_difference(*args, sensitive_features=sf, agg="mean"),
            "eod mean",
        )
