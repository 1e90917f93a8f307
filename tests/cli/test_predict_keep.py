"""`fairfix predict --keep COL` / `--keep-all`: predictions that `fairfix audit` reads without a join."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fairfix.datasets import load_adult

from .test_train_predict_cli import cli, one_error_line


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("keep")
    df = load_adult("test").sample(700, random_state=5).reset_index(drop=True)
    df.insert(0, "id", range(7000, 7700))
    df.to_csv(d / "t.csv", index=False)
    df.to_parquet(d / "t.parquet", index=False)
    res = cli("train", d / "t.csv", "--label", "income", "--group", "sex", "--exclude", "id", "--steps", "60",
              "--hidden", "16,8", "--out", d / "m")
    assert res.exit_code == 0, res.output
    return d


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_predict_then_audit_equals_the_audit_of_the_joined_frame(ws, ext):
    out = ws / f"p.{ext}"
    res = cli("predict", ws / "t.parquet", "--model", ws / "m", "--id", "id", "--keep", "income", "--keep", "sex",
              "--keep", "race", "--keep", "income", "-o", out, "--force")
    assert res.exit_code == 0, res.output
    res = cli("audit", out, "--label", "income", "--group", "sex", "--group", "race", "--pred", "pred",
              "--bootstrap", "0", "--format", "json")
    assert res.exit_code == 0, res.output
    piped = json.loads(res.stdout)
    # the oracle: join the id-only predictions back onto the input rows, then audit
    cli("predict", ws / "t.parquet", "--model", ws / "m", "--id", "id", "-o", ws / "ids.parquet", "--force")
    joined = pd.read_parquet(ws / "t.parquet").merge(pd.read_parquet(ws / "ids.parquet"), on="id")
    joined.to_parquet(ws / "joined.parquet", index=False)
    res = cli("audit", ws / "joined.parquet", "--label", "income", "--group", "sex", "--group", "race", "--pred",
              "pred", "--bootstrap", "0", "--format", "json")
    oracle = json.loads(res.stdout)
    for key in ("n", "overall", "groups", "cells", "summary"):
        assert piped[key] == oracle[key], key
    if ext == "csv":
        assert pd.read_csv(out).columns.tolist() == ["id", "income", "sex", "race", "score", "pred"]


def test_keep_all_carries_every_column(ws):
    res = cli("predict", ws / "t.csv", "--model", ws / "m", "--keep-all", "-o", ws / "all.parquet")
    assert res.exit_code == 0, res.output
    got = pd.read_parquet(ws / "all.parquet")
    src = pd.read_csv(ws / "t.csv")
    assert got.columns.tolist() == ["row", *src.columns, "score", "pred"]
    assert (got["id"].to_numpy() == src["id"].to_numpy()).all() and (got["sex"] == src["sex"]).all()


def test_a_missing_keep_column_is_exit_2_naming_it_and_the_file(ws):
    res = cli("predict", ws / "t.csv", "--model", ws / "m", "--keep", "sex", "--keep", "nope", "-o", ws / "x.csv")
    one_error_line(res, "'nope'", str(ws / "t.csv"))
    assert not (ws / "x.csv").exists()


def test_a_kept_column_named_like_an_output_column_is_exit_2(ws):
    pd.read_csv(ws / "t.csv").assign(pred="old").to_csv(ws / "clash.csv", index=False)
    (ws / "old.csv").write_text("kept\n")
    res = cli("predict", ws / "clash.csv", "--model", ws / "m", "--keep", "pred", "-o", ws / "old.csv", "--force")
    one_error_line(res, "--keep pred", "'pred'")
    assert (ws / "old.csv").read_text() == "kept\n"  # nothing already written is lost
    res = cli("predict", ws / "clash.csv", "--model", ws / "m", "--keep-all", "-o", ws / "y.csv")
    one_error_line(res, "--keep-all", "'pred'")
    # `row` is an output column only without --id
    pd.read_csv(ws / "t.csv").assign(row=1).to_csv(ws / "row.csv", index=False)
    one_error_line(cli("predict", ws / "row.csv", "--model", ws / "m", "--keep", "row", "-o", ws / "z.csv"), "'row'")
    res = cli("predict", ws / "row.csv", "--model", ws / "m", "--id", "id", "--keep", "row", "-o", ws / "z.csv")
    assert res.exit_code == 0, res.output
