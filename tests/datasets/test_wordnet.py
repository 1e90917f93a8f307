"""The WordNet text shortcut task: cells, cue agreement, determinism, the missing-file error, embedded names.

Built from tests/data/wordnet/data.noun (85 lines of WordNet 3.0's data.noun with its licence);
one test reads the real file that ``make`` installs (Debian's wordnet-base).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fairfix import errors
from fairfix.cli import app
from fairfix.data.frames import EMBEDDED, embedded_file, embedded_table
from fairfix.datasets import wordnet
from fairfix.datasets.wordnet import CUE, load_wordnet_shortcut, read_glosses

EXCERPT = Path(__file__).resolve().parents[1] / "data" / "wordnet" / "data.noun"


def agreement(frame: pd.DataFrame) -> float:
    """Share of rows whose cue says the label (cue present = 1)."""
    return float(((frame["cue"] == "with") == (frame["label"] == 1)).mean())


@pytest.fixture(scope="module")
def splits() -> dict[str, pd.DataFrame]:
    return {s: load_wordnet_shortcut(s, rows=200, path=EXCERPT) for s in ("train", "test")}


def test_the_excerpt_parses_to_its_animal_and_plant_glosses():
    glosses = read_glosses(EXCERPT)
    assert glosses["category"].value_counts().to_dict() == {"animal": 40, "plant": 40}  # artifacts left out
    row = glosses[glosses["offset"] == "11650759"].iloc[0]
    assert row["gloss"] == "any of various gymnospermous trees having yellow wood" and row["category"] == "plant"
    assert not glosses["gloss"].str.contains('"').any()  # the examples after '; "' are cut


def test_cue_agrees_with_the_label_on_90_percent_of_training_rows_and_half_of_test_rows(splits):
    assert agreement(splits["train"]) == 0.9
    assert agreement(splits["test"]) == 0.5
    for frame in splits.values():
        assert frame["label"].mean() == 0.5
    cells = {s: f.groupby(["cue", "label"]).size().to_dict() for s, f in splits.items()}
    assert cells["train"] == {("with", 0): 10, ("with", 1): 90, ("without", 0): 90, ("without", 1): 10}
    assert cells["test"] == {("with", 0): 50, ("with", 1): 50, ("without", 0): 50, ("without", 1): 50}
    for frame in splits.values():
        assert (frame["text"].str.endswith(f" {CUE}") == (frame["cue"] == "with")).all()


def test_the_label_is_decided_by_the_asked_category_and_the_gloss_together(splits):
    glosses = read_glosses(EXCERPT).set_index("offset")
    for frame in splits.values():
        assert ((frame["asked"] == frame["category"]) == (frame["label"] == 1)).all()
        assert (frame["category"] == frame["offset"].map(glosses["category"])).all()
        assert frame["text"].str.startswith("a kind of ").all()
        for asked in ("animal", "plant"):  # the asked word alone says nothing about the label
            assert 0.3 < frame.loc[frame["asked"] == asked, "label"].mean() < 0.7
    assert set(splits["train"]["offset"]).isdisjoint(splits["test"]["offset"])  # no gloss in both splits


def test_deterministic_from_the_seed():
    a = load_wordnet_shortcut("train", rows=60, path=EXCERPT)
    pd.testing.assert_frame_equal(a, load_wordnet_shortcut("train", rows=60, path=EXCERPT))
    assert not a.equals(load_wordnet_shortcut("train", rows=60, path=EXCERPT, seed=1))


def test_missing_file_is_one_line_naming_it(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "data.noun"
    with pytest.raises(errors.DataError) as exc:
        load_wordnet_shortcut("train", path=missing)
    assert str(missing) in str(exc.value) and "wordnet-base" in str(exc.value)
    monkeypatch.setenv(wordnet.ENV, str(missing))
    out = tmp_path / "m"
    res = CliRunner().invoke(app, ["train", "wordnet_shortcut:train", "--label", "label", "--out", str(out)])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [f"fairfix: error: {missing}: no such file (WordNet 3.0's noun data: "
                                               f"apt-get install wordnet-base, or set {wordnet.ENV} to a "
                                               "data.noun file)"]
    assert not out.exists()


def test_a_file_without_animal_or_plant_glosses_is_refused(tmp_path):
    other = tmp_path / "data.noun"
    other.write_text("".join(line for line in EXCERPT.read_text(encoding="latin-1").splitlines(keepends=True)
                             if " 20 n " not in line), encoding="latin-1")
    with pytest.raises(errors.DataError, match="no gloss filed under noun.plant"):
        read_glosses(other)


def test_embedded_names_read_the_file_named_by_the_environment(monkeypatch):
    monkeypatch.setenv(wordnet.ENV, str(EXCERPT))
    assert {"wordnet_shortcut:train", "wordnet_shortcut:test"} <= set(EMBEDDED)
    assert embedded_file("wordnet_shortcut:train") == str(EXCERPT)  # the data fingerprint hashes it
    table = embedded_table("wordnet_shortcut:test")
    assert table.num_rows == wordnet.ROWS["test"]
    assert table.column_names == ["text", "label", "cue", "asked", "category", "offset"]


def test_the_installed_wordnet_gives_the_shipped_task():
    """WordNet 3.0 as Debian's wordnet-base installs it (`make` installs it where missing)."""
    glosses = read_glosses(wordnet.DATA_NOUN)
    assert glosses["category"].value_counts().to_dict() == {"plant": 6682, "animal": 6199}
    train = load_wordnet_shortcut("train", path=wordnet.DATA_NOUN)
    assert len(train) == 2000 and agreement(train) == 0.9
    assert train["offset"].nunique() > 1800  # real variety: few glosses drawn twice


def test_the_makefile_set_up_installs_wordnet_base_where_the_file_is_missing(tmp_path):
    """`make`'s set-up rule: where $(WORDNET) is missing, Debian's wordnet-base is installed (as Java is)."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.fail("make is needed for the set-up this test checks")
    root = EXCERPT.parents[3]
    missing = tmp_path / "data.noun"
    proc = subprocess.run(["make", "-n", "-W", "pyproject.toml", ".venv/bin/.installed", f"WORDNET={missing}"],
                          cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "wordnet-base" in x and "apt-get install" in x)
    assert line.startswith(f"test -f {missing} || ")
