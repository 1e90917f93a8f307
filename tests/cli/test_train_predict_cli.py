"""`fairfix train`, `fairfix predict` and `fairfix audit --model` through the command line.

Most commands run in-process (Typer's CliRunner) to keep the file fast; one test runs the
real console script.  Data: a 2,000-row sample of Adult, models trained for 2 epochs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from fairfix.artifacts import MANIFEST, sha256_file
from fairfix.cli import app
from fairfix.datasets import load_adult

N = 2000
GROUPS = ["--group", "sex", "--group", "race"]


def cli(*args: str | os.PathLike[str]):
    """Run ``fairfix ARGS`` in-process; the result has exit_code, stdout and stderr."""
    env = {"FAIRFIX_DEBUG": "", "NO_COLOR": "1", "FAIRFIX_NO_PROGRESS": "1"}
    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def one_error_line(result, *needles: str) -> str:
    """Assert exit 2 with a single ``fairfix: error:`` line on stderr containing every needle."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fairfix: error: "), lines
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """The same 2,000 rows as CSV and Parquet, with an integer ``id`` column."""
    d = tmp_path_factory.mktemp("data")
    df = load_adult("train").sample(N, random_state=1).reset_index(drop=True)
    df.insert(0, "id", np.arange(1000, 1000 + N, dtype=np.int64))
    df.to_csv(d / "s.csv", index=False)
    df.to_parquet(d / "s.parquet", index=False)
    return {"csv": d / "s.csv", "parquet": d / "s.parquet"}


@pytest.fixture(scope="module")
def model(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "mlp"
    r = cli("train", data["csv"], "--label", "income", *GROUPS, "--exclude", "id",
            "--epochs", "2", "--hidden", "16,8", "--out", out, "--format", "json")
    assert r.exit_code == 0, r.stderr
    return out


def read_any(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".csv":
        return pcsv.read_csv(path)
    import pyarrow.json as pjson

    return pjson.read_json(path)


def write_any(table: pa.Table, path: Path) -> None:
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        pcsv.write_csv(table, path)


def audit_json(*args) -> dict:
    r = cli("audit", *args, "--label", "income", *GROUPS, "--bootstrap", "200", "--format", "json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


# ----------------------------------------------------------------------------- train
def test_train_summary_and_manifest_record_sensitive_columns(model):
    manifest = json.loads((model / MANIFEST).read_text())
    cfg = manifest["config"]
    assert cfg["sensitive_columns"] == ["sex", "race"]
    assert "sex" not in cfg["features"] and "race" not in cfg["features"]
    assert "id" not in cfg["features"] and "income" not in cfg["features"]
    assert "age" in cfg["features"] and "occupation" in cfg["features"]
    assert manifest["training"]["data"]["rows"] == N
    assert manifest["training"]["data"]["sha256"]
    assert manifest["files"] == {"model.safetensors": sha256_file(model / "model.safetensors")}


def test_explicit_features_keep_a_group_column(data, tmp_path):
    r = cli("train", data["parquet"], "--label", "income", "--group", "sex", "--features",
            "age,sex,education", "--epochs", "1", "--out", tmp_path / "m", "--format", "json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["features"] == ["age", "sex", "education"]
    assert summary["sensitive_columns_excluded"] == []
    cfg = json.loads((tmp_path / "m" / MANIFEST).read_text())["config"]
    assert cfg["features"] == ["age", "sex", "education"] and cfg["sensitive_columns"] == ["sex"]


def test_same_seed_same_weights_other_seed_other_weights(data, tmp_path):
    def train(name: str, seed: int) -> tuple[bytes, str]:
        r = cli("train", data["csv"], "--label", "income", *GROUPS, "--exclude", "id",
                "--epochs", "2", "--hidden", "16,8", "--seed", str(seed), "--out", tmp_path / name)
        assert r.exit_code == 0, r.stderr
        files = json.loads((tmp_path / name / MANIFEST).read_text())["files"]
        return (tmp_path / name / "model.safetensors").read_bytes(), files["model.safetensors"]

    a, b, c = train("a", 7), train("b", 7), train("c", 8)
    assert a[0] == b[0] and a[1] == b[1]
    assert a[0] != c[0] and a[1] != c[1]


def test_train_refuses_existing_out_and_bad_options(data, model, tmp_path):
    before = sha256_file(model / "model.safetensors")
    r = cli("train", data["csv"], "--label", "income", "--out", model)
    one_error_line(r, "exists", "--force")
    assert sha256_file(model / "model.safetensors") == before
    one_error_line(cli("train", data["csv"], "--label", "nope", "--out", tmp_path / "x"), "'nope'")
    one_error_line(cli("train", data["csv"], "--label", "income", "--group", "gender",
                       "--out", tmp_path / "x"), "'gender'")
    one_error_line(cli("train", data["csv"], "--label", "income", "--hidden", "16,x",
                       "--out", tmp_path / "x"), "--hidden")
    assert not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


# ----------------------------------------------------------------------------- audit --model
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_audit_model_equals_predict_then_audit_score(data, model, tmp_path, fmt):
    src = data[fmt]
    preds = tmp_path / f"pred.{fmt}"
    r = cli("predict", src, "--model", model, "--id", "id", "--output", preds)
    assert r.exit_code == 0, r.stderr
    p = read_any(preds)
    d = read_any(src)
    assert p.column("id").to_pylist() == d.column("id").to_pylist()  # input order, ids kept
    joined = d.append_column("score", p.column("score"))
    scored = tmp_path / f"joined.{fmt}"
    write_any(joined, scored)

    direct = audit_json(src, "--model", model)
    two_step = audit_json(scored, "--score", "score")
    assert direct["settings"]["model"]["kind"] == "tabular_mlp"
    assert two_step["settings"]["score_column"] == "score"
    direct.pop("settings")
    two_step.pop("settings")
    assert direct == two_step
    assert direct["n"] == N


def test_audit_model_threshold_matches_predict_threshold(data, model, tmp_path):
    preds = tmp_path / "p.parquet"
    assert cli("predict", data["parquet"], "--model", model, "--threshold", "0.3",
               "--output", preds).exit_code == 0
    joined = read_any(data["parquet"]).append_column("pred", read_any(preds).column("pred"))
    write_any(joined, tmp_path / "j.parquet")
    direct = audit_json(data["parquet"], "--model", model, "--threshold", "0.3")
    via_pred = audit_json(tmp_path / "j.parquet", "--pred", "pred")
    for k in ("overall", "groups", "cells", "summary"):
        assert direct[k] == via_pred[k], k


# ----------------------------------------------------------------------------- predict
@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("with_id", [True, False])
def test_predict_output_by_extension(data, model, tmp_path, ext, with_id):
    out = tmp_path / f"out.{ext}"
    args = ["--id", "id"] if with_id else []
    r = cli("predict", data["csv"], "--model", model, "--output", out, *args)
    assert r.exit_code == 0, r.stderr
    assert f"wrote {N} rows" in r.stderr
    t = read_any(out)
    if ext == "parquet":
        assert pq.ParquetFile(out).metadata.num_rows == N  # really Parquet
    elif ext == "jsonl":
        lines = out.read_text().splitlines()
        assert len(lines) == N and isinstance(json.loads(lines[0]), dict)
    else:
        assert out.read_text().splitlines()[0].replace('"', "").split(",")[1:] == ["score", "pred"]
    first = "id" if with_id else "row"
    assert t.column_names == [first, "score", "pred"]
    assert pa.types.is_integer(t.schema.field(first).type)  # an integer id stays an integer
    expected_first = list(range(1000, 1000 + N)) if with_id else list(range(N))
    assert t.column(first).to_pylist() == expected_first
    score = t.column("score").to_numpy()
    assert np.all((score >= 0) & (score <= 1))
    pred = np.asarray(t.column("pred").to_pylist())
    assert set(pred) <= {"<=50K", ">50K"}
    assert np.array_equal(pred == ">50K", score >= 0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp files left


def test_predict_string_id_and_missing_id(data, model, tmp_path):
    r = cli("predict", data["parquet"], "--model", model, "--id", "occupation",
            "--output", tmp_path / "o.parquet")
    assert r.exit_code == 0, r.stderr
    ids = read_any(tmp_path / "o.parquet").column("occupation").to_pylist()
    assert ids == read_any(data["parquet"]).column("occupation").to_pylist()
    one_error_line(cli("predict", data["parquet"], "--model", model, "--id", "nope",
                       "--output", tmp_path / "p.csv"), "'nope'")
    assert not (tmp_path / "p.csv").exists()


def test_id_column_that_is_also_a_feature_keeps_its_type(data, tmp_path):
    # Trained without --exclude id: the id is a numeric input, parsed as float64 for the
    # model, but the --id copy in the output must stay the integer it is in the CSV.
    m = tmp_path / "m"
    assert cli("train", data["csv"], "--label", "income", "--features", "id,age,education",
               "--epochs", "1", "--out", m).exit_code == 0
    out = tmp_path / "o.parquet"
    r = cli("predict", data["csv"], "--model", m, "--id", "id", "--output", out)
    assert r.exit_code == 0, r.stderr
    ids = pq.read_table(out).column("id")
    assert pa.types.is_integer(ids.type), ids.type
    assert ids.to_pylist() == list(range(1000, 1000 + N))


def test_predict_refuses_existing_output_without_force(data, model, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("keep me\n")
    r = cli("predict", data["csv"], "--model", model, "--output", out)
    one_error_line(r, str(out), "--force")
    assert out.read_text() == "keep me\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    r = cli("predict", data["csv"], "--model", model, "--output", out, "--force")
    assert r.exit_code == 0, r.stderr
    assert read_any(out).num_rows == N
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_predict_output_appears_only_when_complete(data, model, tmp_path, monkeypatch, ext):
    import fairfix.predict as fp
    from fairfix import errors

    out = tmp_path / f"out.{ext}"
    real = fp.iter_predictions
    seen: dict[str, object] = {}

    def failing(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 2:
                seen["target_existed"] = out.exists()
                seen["partial"] = sorted(p.name for p in tmp_path.iterdir())
                raise errors.DataError("boom in the middle")
            yield item

    monkeypatch.setattr(fp, "iter_predictions", failing)
    r = cli("predict", data["csv"], "--model", model, "--output", out, "--batch-size", "300")
    one_error_line(r, "boom")
    assert seen["target_existed"] is False
    # It was being written to a temporary sibling.
    assert len(seen["partial"]) == 1 and seen["partial"][0].endswith(".tmp")
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_predict_batches_agree_with_one_batch(data, model, tmp_path):
    assert cli("predict", data["parquet"], "--model", model,
               "--output", tmp_path / "a.parquet").exit_code == 0
    assert cli("predict", data["parquet"], "--model", model, "--batch-size", "333",
               "--output", tmp_path / "b.parquet").exit_code == 0
    a, b = read_any(tmp_path / "a.parquet"), read_any(tmp_path / "b.parquet")
    assert a.column("row").to_pylist() == b.column("row").to_pylist() == list(range(N))
    sa, sb = a.column("score").to_numpy(), b.column("score").to_numpy()
    assert np.allclose(sa, sb, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- bad models / data
def _rewrite_hash(d: Path) -> None:
    m = json.loads((d / MANIFEST).read_text())
    m["files"]["model.safetensors"] = sha256_file(d / "model.safetensors")
    (d / MANIFEST).write_text(json.dumps(m))


def _flip_byte(d: Path) -> None:
    w = d / "model.safetensors"
    b = bytearray(w.read_bytes())
    b[-5] ^= 0xFF
    w.write_bytes(bytes(b))


def _truncate_rehash(d: Path) -> None:
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    _rewrite_hash(d)


def _edit_state(d: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / "model.safetensors"))
    edit(state)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    _rewrite_hash(d)


def _drop_key(d: Path) -> None:
    _edit_state(d, lambda s: s.pop("blocks.1.linear.bias"))


def _wrong_shape(d: Path) -> None:
    _edit_state(d, lambda s: s.update({"head.weight": torch.zeros(3, 8)}))


def _delete_weights(d: Path) -> None:
    (d / "model.safetensors").unlink()


def _garble_manifest(d: Path) -> None:
    (d / MANIFEST).write_text("{not json")


def _not_a_model(d: Path) -> None:
    shutil.rmtree(d)
    d.mkdir()
    (d / "notes.txt").write_text("hello")


BAD = {
    "sha256-mismatch": (_flip_byte, ["model.safetensors", "sha256"]),
    "truncated-rehashed": (_truncate_rehash,
                           ["model.safetensors", "not a readable safetensors file"]),
    "missing-key": (_drop_key, ["model.safetensors", "'blocks.1.linear.bias'"]),
    "wrong-shape": (_wrong_shape, ["model.safetensors", "'head.weight'", "(3, 8)", "(2, 8)"]),
    "weights-deleted": (_delete_weights, ["model.safetensors", "missing"]),
    "garbled-manifest": (_garble_manifest, [MANIFEST, "unreadable manifest"]),
    "not-a-model": (_not_a_model, ["not a model fairfix recognises"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["predict", "audit"])
def test_bad_checkpoint_exit_2_one_line(data, model, tmp_path, case, command):
    damage, needles = BAD[case]
    bad = tmp_path / "bad-model"
    shutil.copytree(model, bad)
    damage(bad)
    out = tmp_path / "out.csv"
    if command == "predict":
        r = cli("predict", data["csv"], "--model", bad, "--output", out)
    else:
        r = cli("audit", data["csv"], "--model", bad, "--label", "income", "--group", "sex",
                "--format", "json", "--output", out)
    one_error_line(r, str(bad), *needles)
    assert r.stdout == ""
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad-model"]


@pytest.mark.parametrize("command", ["predict", "audit"])
def test_missing_model_path(data, tmp_path, command):
    gone = tmp_path / "no-such-model"
    if command == "predict":
        r = cli("predict", data["csv"], "--model", gone, "--output", tmp_path / "o.csv")
    else:
        r = cli("audit", data["csv"], "--model", gone, "--label", "income", "--group", "sex")
    one_error_line(r, str(gone), "no such model")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("command", ["predict", "audit"])
def test_data_lacking_a_model_input_column(data, model, tmp_path, fmt, command):
    t = read_any(data[fmt]).drop_columns(["education"])
    src = tmp_path / f"lacking.{fmt}"
    write_any(t, src)
    out = tmp_path / "out.csv"
    if command == "predict":
        r = cli("predict", src, "--model", model, "--output", out)
    else:
        r = cli("audit", src, "--model", model, "--label", "income", "--group", "sex")
    one_error_line(r, str(src), "'education'")
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_numeric_input_with_text_is_exit_2(data, model, tmp_path):
    t = read_any(data["parquet"])
    ages = [str(a) for a in t.column("age").to_pylist()]
    ages[1500] = "forty"
    t = t.set_column(t.column_names.index("age"), "age", pa.array(ages))
    src = tmp_path / "text-age.parquet"
    write_any(t, src)
    one_error_line(cli("predict", src, "--model", model, "--output", tmp_path / "o.csv"), "'age'")
    assert not (tmp_path / "o.csv").exists()


# ----------------------------------------------------------------------------- embedded data
def test_embedded_adult_train_and_audit(tmp_path):
    m = tmp_path / "adult-mlp"
    r = cli("train", "adult:train", "--label", "income", *GROUPS, "--epochs", "1",
            "--hidden", "16,8", "--out", m, "--format", "json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["rows"] == 32561 and summary["sensitive_columns_excluded"] == ["sex", "race"]
    fp = json.loads((m / MANIFEST).read_text())["training"]["data"]
    assert fp["source"].endswith("adult.data.gz")
    assert len(fp["sha256"]) == 64 and fp["rows"] == 32561
    r = cli("audit", "adult:test", "--model", m, "--label", "income", *GROUPS, "--bootstrap", "0",
            "--format", "json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["n"] == 16281 and report["positive_label"] == ">50K"
    assert 0.7 < report["overall"]["accuracy"] <= 1.0
    r = cli("predict", "adult:test", "--model", m, "--output", tmp_path / "p.parquet")
    assert r.exit_code == 0, r.stderr
    assert pq.ParquetFile(tmp_path / "p.parquet").metadata.num_rows == 16281


# ----------------------------------------------------------------------------- the real script
def test_console_script_bad_model_one_line(data, tmp_path):
    exe = Path(sys.executable).with_name("fairfix")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fairfix"]
    env = {k: v for k, v in os.environ.items() if k != "FAIRFIX_DEBUG"}
    env["OMP_NUM_THREADS"] = "1"
    bad = tmp_path / "m"
    bad.mkdir()
    manifest = {"kind": "model", "files": {"model.safetensors": "0" * 64}}
    (bad / MANIFEST).write_text(json.dumps(manifest))
    r = subprocess.run([*cmd, "predict", str(data["csv"]), "--model", str(bad), "--output",
                        str(tmp_path / "o.csv")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    expected = f"fairfix: error: {bad}: file model.safetensors listed in {MANIFEST} is missing"
    assert r.stderr.splitlines() == [expected]
    assert r.stdout == ""
    assert not (tmp_path / "o.csv").exists()
