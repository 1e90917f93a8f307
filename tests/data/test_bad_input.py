"""Bad input files are exit 2 with one line naming the file (issue 11, defects 7, 8, 15)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fairfix.cli import app
from fairfix.data.tables import open_table

runner = CliRunner()
ROWS = "".join(f"{i % 2},{(i // 2) % 2},{'ab'[i % 3 == 0]}\n" for i in range(60))


def _audit(path, *extra):
    return runner.invoke(app, ["audit", str(path), "--label", "y", "--pred", "p", "--group", "g",
                               "--format", "json", *extra])


def _exit_2_line(res, name) -> str:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fairfix: error: "), res.stderr
    assert name in lines[0] and "unexpected" not in lines[0]
    return lines[0]


def _not_gzip(p):
    p.write_text("y,p,g\n1,1,a\n")


def _truncated_gzip(p):
    data = gzip.compress(("y,p,g\n" + ROWS * 50).encode())
    p.write_bytes(data[: len(data) // 2])


def _corrupt_gzip(p):
    data = gzip.compress(("y,p,g\n" + ROWS * 50).encode())
    p.write_bytes(data[:20] + b"\0" * 50 + data[70:])


def _duplicate_parquet_column(p):
    t = pa.Table.from_arrays([pa.array([1, 0]), pa.array([1, 1]), pa.array(["a", "b"]), pa.array([1, 2])],
                             names=["y", "p", "g", "g"])
    pq.write_table(t, p)


def _huge_header_field(p):
    p.write_text("y,p,g," + "x" * (200 * 1024) + "\n1,1,a\n")


@pytest.mark.parametrize(("name", "make", "message"), [
    ("x.csv.gz", _not_gzip, "cannot read as csv"),
    ("t.csv.gz", _truncated_gzip, "cannot read as csv"),
    ("c.csv.gz", _corrupt_gzip, "cannot read as csv"),
    ("d.parquet", _duplicate_parquet_column, "column 'g' appears twice"),
])
def test_corrupt_files_are_exit_2(tmp_path, name, make, message):
    make(tmp_path / name)
    assert message in _exit_2_line(_audit(tmp_path / name), name)


def test_blanks_around_header_names_are_stripped(tmp_path):
    (tmp_path / "s.csv").write_text("y, p, g\n" + ROWS)
    res = _audit(tmp_path / "s.csv")
    assert res.exit_code == 0, res.output


def test_header_field_over_128_kib_is_read(tmp_path):
    _huge_header_field(tmp_path / "h.csv")
    assert open_table(str(tmp_path / "h.csv")).columns[:3] == ["y", "p", "g"]


def test_quoted_newline_in_header_keeps_the_columns(tmp_path):
    (tmp_path / "q.csv").write_text('y,"p\nq",g\n' + ROWS)
    table = open_table(str(tmp_path / "q.csv"))
    assert table.columns == ["y", "p\nq", "g"]
    res = runner.invoke(app, ["audit", str(tmp_path / "q.csv"), "--label", "y", "--pred", "p\nq", "--group", "g",
                              "--format", "json"])
    assert res.exit_code == 0, res.output


def test_header_is_read_again_on_a_second_pass(tmp_path):
    from fairfix.data.frames import read_frame

    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(('y,"p\nq",g\n' + ROWS).encode()))
    table = open_table(str(tmp_path / "a.csv.gz"))
    for _ in range(2):
        batches = list(table.iter_batches(["y", "g"]))
        assert sum(b.num_rows for b in batches) == 60
    assert list(read_frame(str(tmp_path / "a.csv.gz")).columns) == ["y", "p\nq", "g"]


def test_file_streams_handed_to_pyarrow_are_native(tmp_path):
    """pyarrow's read-ahead threads must never call back into Python (defect 8: exit 134 at exit)."""
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(("y,p,g\n" + ROWS).encode()))
    (tmp_path / "a.jsonl").write_text('{"y": 1, "p": 0, "g": "a"}\n')
    for name in ("a.csv.gz", "a.jsonl"):
        stream = open_table(str(tmp_path / name))._source()
        assert isinstance(stream, pa.NativeFile), type(stream)
        stream.close()


def test_truncated_gzip_exits_2_without_abort(tmp_path):
    rng = np.random.default_rng(0)
    n = 400_000
    body = "\n".join(f"{a},{b},{c}" for a, b, c in zip(rng.integers(0, 2, n), rng.integers(0, 2, n),
                                                        rng.choice(list("abcdef"), n), strict=True))
    data = gzip.compress(("y,p,g\n" + body + "\n").encode(), compresslevel=1)
    (tmp_path / "big.csv.gz").write_bytes(data[: int(len(data) * 0.7)])
    env = {**os.environ, "FAIRFIX_NO_PROGRESS": "1"}
    for _ in range(8):
        proc = subprocess.run([sys.executable, "-m", "fairfix", "audit", str(tmp_path / "big.csv.gz"), "--label",
                               "y", "--pred", "p", "--group", "g", "--format", "json"],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "terminate called" not in proc.stderr
        assert proc.stderr.count("\n") == 1
