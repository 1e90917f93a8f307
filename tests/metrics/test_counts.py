"""Confusion counts: chunked reading equals one pass, and counts add up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import fairfix
from fairfix.metrics import ConfusionCounts, CountAccumulator, counts_from_arrays
from fairfix.metrics.counts import encode

N_ROWS = 2000
WHOLE = 10**7


def _frame(n: int = N_ROWS, seed: int = 0) -> pd.DataFrame:
    """Adult-like predictions; the group 'Late' and race 9 occur only in the last rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.8, y, 1 - y)
    sex = rng.choice(["Female", "Male", "Non-binary person"], n, p=[0.45, 0.5, 0.05])
    race = rng.choice([0, 1, 2, 3], n, p=[0.6, 0.3, 0.08, 0.02])
    sex[-3:] = "Late"
    race[-2:] = 9
    return pd.DataFrame(
        {
            "row_id": np.arange(n),
            "income": np.where(y == 1, ">50K", "<=50K"),
            "predicted_income": np.where(p == 1, ">50K", "<=50K"),
            "sex": sex,
            "race": race,
            "note": "padding so that the CSV and JSON Lines files span several 64 KiB read blocks",
        }
    )


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    df = _frame()
    d = tmp_path_factory.mktemp("chunks")
    files = {"csv": d / "preds.csv", "parquet": d / "preds.parquet", "jsonl": d / "preds.jsonl"}
    df.to_csv(files["csv"], index=False)
    df.to_parquet(files["parquet"], index=False)
    df.to_json(files["jsonl"], orient="records", lines=True)
    return files


def _audit(path: Path, batch_rows: int) -> tuple[fairfix.AuditReport, int]:
    batches = []
    report = fairfix.audit(
        str(path),
        label="income",
        pred="predicted_income",
        group=["sex", "race"],
        bootstrap=0,
        batch_rows=batch_rows,
        progress=lambda done, total: batches.append(done),
    )
    assert batches[-1] == N_ROWS
    return report, len(batches)


def _assert_same_counts(a: ConfusionCounts, b: ConfusionCounts) -> None:
    assert a.group_columns == b.group_columns
    assert a.groups == b.groups
    assert a.classes == b.classes
    assert a.label_classes == b.label_classes
    assert a.counts.dtype == b.counts.dtype == np.int64
    np.testing.assert_array_equal(a.counts, b.counts)


@pytest.fixture(scope="module")
def reference() -> ConfusionCounts:
    df = _frame()
    return counts_from_arrays(
        df["income"], df["predicted_income"], {"sex": df["sex"], "race": df["race"]}
    )


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("batch_rows", [1, 7, 1000, WHOLE])
def test_chunked_counts_equal_whole_file(
    data_files: dict[str, Path], reference: ConfusionCounts, fmt: str, batch_rows: int
) -> None:
    report, n_batches = _audit(data_files[fmt], batch_rows)
    _assert_same_counts(report.counts, reference)
    whole, whole_batches = _audit(data_files[fmt], WHOLE)
    assert whole_batches == 1
    _assert_same_counts(report.counts, whole.counts)
    assert report.summary == whole.summary
    if batch_rows < 1000:
        assert n_batches > 1, "the file was not actually read in chunks"
    if fmt == "parquet":
        assert n_batches == -(-N_ROWS // min(batch_rows, N_ROWS))


def test_reference_counts_are_right(reference: ConfusionCounts) -> None:
    df = _frame()
    assert reference.classes == ("<=50K", ">50K")
    assert ("Late", 9) in reference.groups
    assert reference.groups == tuple(sorted(reference.groups, key=lambda g: (g[0], g[1])))
    assert reference.n == N_ROWS
    sizes = df.groupby(["sex", "race", "income", "predicted_income"]).size()
    for (sex, race, y, p), n in sizes.items():
        g = reference.groups.index((sex, int(race)))
        assert reference.counts[g, reference.classes.index(y), reference.classes.index(p)] == n
    assert reference.counts.sum() == sizes.sum()


def test_accumulator_batches_with_different_dictionaries() -> None:
    """Batches whose per-batch dictionaries order the values differently still add up."""
    import pyarrow as pa

    df = _frame(500, seed=1)
    acc = CountAccumulator(["sex", "race"])
    for lo, hi in [(0, 1), (1, 17), (17, 250), (250, 251), (251, 500)]:
        part = df.iloc[lo:hi][::-1]  # reversed: first-seen order differs from the whole
        gcodes = [
            encode(pa.array(part[c].tolist()), voc)[0]
            for c, voc in zip(["sex", "race"], acc.group_vocabs, strict=True)
        ]
        y, _ = encode(pa.array(part["income"].tolist()), acc.label_vocab)
        p, _ = encode(pa.array(part["predicted_income"].tolist()), acc.pred_vocab)
        acc.add_codes(gcodes, y, p)
    whole = counts_from_arrays(
        df["income"], df["predicted_income"], {"sex": df["sex"], "race": df["race"]}
    )
    _assert_same_counts(acc.result(), whole)


@pytest.mark.parametrize("split", [1, 250, N_ROWS - 1])
def test_add_of_two_halves_equals_whole(reference: ConfusionCounts, split: int) -> None:
    df = _frame()

    def counts(part: pd.DataFrame) -> ConfusionCounts:
        return counts_from_arrays(
            part["income"], part["predicted_income"], {"sex": part["sex"], "race": part["race"]}
        )

    first, second = counts(df.iloc[:split]), counts(df.iloc[split:])
    assert first.groups != reference.groups or second.groups != reference.groups
    _assert_same_counts(first + second, reference)
    _assert_same_counts(second + first, reference)
    assert (first + second).n == first.n + second.n == N_ROWS


def test_add_merges_classes_seen_in_one_part_only() -> None:
    a = counts_from_arrays([0, 1, 1], [0, 1, 0], {"g": ["x", "x", "y"]})
    b = counts_from_arrays([2, 2, 0], [2, 1, 2], {"g": ["y", "z", "z"]})
    whole = counts_from_arrays(
        [0, 1, 1, 2, 2, 0], [0, 1, 0, 2, 1, 2], {"g": ["x", "x", "y", "y", "z", "z"]}
    )
    _assert_same_counts(a + b, whole)
    assert whole.classes == whole.label_classes == (0, 1, 2)


def test_add_refuses_different_group_columns() -> None:
    a = counts_from_arrays([0, 1], [0, 1], {"g": ["x", "y"]})
    b = counts_from_arrays([0, 1], [0, 1], {"h": ["x", "y"]})
    with pytest.raises(ValueError, match="group columns"):
        a + b


def test_classes_only_predicted_are_not_label_classes() -> None:
    c = counts_from_arrays([0, 1, 0, 1], [0, 2, 2, 1], ["a", "a", "b", "b"])
    assert c.classes == (0, 1, 2)
    assert c.label_classes == (0, 1)
    assert c.counts.shape == (2, 3, 3)
    assert c.group_columns == ("group",)


@pytest.mark.parametrize(
    ("y", "p", "classes", "correct"),
    [
        (["1", "0", "1"], [1.0, 0.0, 0.0], (0, 1), 2),  # CSV text label vs float predictions
        ([True, False, True], [1, 0, 0], (0, 1), 2),
        (["true", "False", "TRUE"], ["false", "true", "false"], (False, True), 0),
        ([">50K", "<=50K", ">50K"], [">50K", ">50K", "<=50K"], ("<=50K", ">50K"), 1),
    ],
)
def test_label_and_prediction_values_are_normalised_together(
    y: list[Any], p: list[Any], classes: tuple[Any, ...], correct: int
) -> None:
    c = counts_from_arrays(y, p, ["g"] * 3)
    assert c.classes == classes
    assert c.counts.sum() == 3
    # "1" and 1.0 (or True and 1) are one class: matching rows land on the diagonal.
    assert np.trace(c.counts[0]) == correct


@pytest.mark.parametrize("source", ["frame", "csv", "parquet"])
def test_text_labels_and_float_predictions_are_one_class(tmp_path: Path, source: str) -> None:
    """A text label column next to a float prediction column (pandas, Parquet) as in CSV."""
    df = pd.DataFrame({"y": ["1", "0", "1", "0"], "p": [1.0, 0.0, 0.0, 0.0], "g": list("aabb")})
    data: Any = df
    if source != "frame":
        data = tmp_path / f"preds.{source}"
        df.to_csv(data, index=False) if source == "csv" else df.to_parquet(data, index=False)
        data = str(data)
    report = fairfix.audit(data, label="y", pred="p", group="g", bootstrap=0)
    assert report.counts.classes == (0, 1)
    assert report.positive_label == 1
    assert report.summary["accuracy"] == 0.75
    assert [g["tpr"] for g in report.groups] == [1.0, 0.0]


@pytest.mark.parametrize(
    ("y", "p", "groups", "message"),
    [
        ([0, 1, float("nan"), 1], [0, 1, 1, 1], ["a"] * 4, "y_true has a missing value"),
        ([0, 1, None, 1], [0, 1, 1, 1], ["a"] * 4, "y_true has a missing value"),
        ([0, 1, 1, 1], [0, None, 1, 1], ["a"] * 4, "y_pred has a missing value"),
        ([0, 1, 1, 1], [0, 1, 1, 1], ["a", "b", None, "b"], "group 'group' has a missing"),
        ([0, 1, 1, 1], [1], ["a"] * 4, "y_pred has 1 values"),
        ([0, 1], [0, 1], {"g": ["a", "b"], "h": [1, 2, 3]}, "group 'h' has 3 values"),
    ],
)
def test_counts_from_arrays_refuses_missing_values_and_ragged_arrays(
    y: list[Any], p: list[Any], groups: Any, message: str
) -> None:
    # A missing value used to be counted silently as the first value of its column.
    with pytest.raises(ValueError, match=message):
        counts_from_arrays(y, p, groups)


# -- issue 11: group values are kept as written -------------------------------------------------------
def test_numeric_looking_group_codes_are_not_merged(tmp_path):
    import fairfix

    (tmp_path / "z.csv").write_text("y,p,zip\n1,1,01\n0,1,1\n1,0,001\n0,0,1.0\n1,1,01\n")
    rep = fairfix.audit(str(tmp_path / "z.csv"), label="y", pred="p", group="zip", bootstrap=0)
    assert sorted(g["group"]["zip"] for g in rep.to_dict()["groups"]) == ["001", "01", "1", "1.0"]
    assert {g["group"]["zip"]: g["n"] for g in rep.to_dict()["groups"]}["01"] == 2


def test_group_vocabularies_that_lose_nothing_are_typed():
    from fairfix.metrics.counts import normalize_group_values

    assert normalize_group_values(["1", "20", "-3"]) == [1, 20, -3]
    assert normalize_group_values(["true", "False"]) == [True, False]
    assert normalize_group_values(["True", "true"]) == ["True", "true"]
    assert normalize_group_values(["01", "1"]) == ["01", "1"]
    assert normalize_group_values([" a", "a"]) == [" a", "a"]
    assert normalize_group_values([1.0, 2.0]) == [1, 2]  # typed by the file (Parquet/JSON numbers)


def test_parquet_numbers_stay_numbers(tmp_path):
    import pandas as pd

    import fairfix

    pd.DataFrame({"y": [1, 0, 1, 0], "p": [1, 1, 0, 0], "g": [1.0, 2.0, 1.0, 2.0]}).to_parquet(tmp_path / "g.parquet")
    rep = fairfix.audit(str(tmp_path / "g.parquet"), label="y", pred="p", group="g", bootstrap=0)
    assert [g["group"]["g"] for g in rep.to_dict()["groups"]] == [1, 2]


def test_literal_missing_marker_is_not_merged_with_missing_rows(tmp_path):
    from typer.testing import CliRunner

    from fairfix.cli import app

    (tmp_path / "m.csv").write_text("y,p,g\n1,1,<missing>\n0,1,\n1,0,a\n0,0,a\n")
    res = CliRunner().invoke(app, ["audit", str(tmp_path / "m.csv"), "--label", "y", "--pred", "p", "--group", "g",
                                   "--keep-missing-groups", "--bootstrap", "0"])
    assert res.exit_code == 2, res.output
    assert "m.csv" in res.stderr and "'<missing>'" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "ok.csv").write_text("y,p,g\n1,1,b\n0,1,\n1,0,a\n0,0,a\n")
    res = CliRunner().invoke(app, ["audit", str(tmp_path / "ok.csv"), "--label", "y", "--pred", "p", "--group", "g",
                                   "--keep-missing-groups", "--bootstrap", "0", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert "<missing>" in [g["group"]["g"] for g in json.loads(res.stdout)["groups"]]
