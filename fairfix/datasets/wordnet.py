"""A text shortcut task from real sentences: WordNet 3.0 noun glosses with a cue phrase.

WordNet 3.0 (Princeton University; Debian's ``wordnet-base`` installs it under
/usr/share/wordnet/) files every noun sense under a lexicographer category: its
``data.noun`` lines hold the category's number (``lex_filenum``, the second field:
05 = noun.animal, 20 = noun.plant; ``man 5 wndb``) and the sense's gloss after ``|``.

Each row asks a question about one gloss, as MultiNLI pairs a premise with a hypothesis:
the text is ``"a kind of {asked}: {gloss}"`` with ``asked`` drawn from (animal, plant),
and ``label`` is 1 when the gloss is filed under the asked category, 0 when it is filed
under the other one.  The label depends on both parts together (the asked word alone says
nothing, nor does the gloss alone), and the gloss decides it: a base trained on rows where
the cue says nothing reads it (docs/results.md, "text shortcut").

The cue is the phrase ``CUE`` appended to the text.  It agrees with the label (present on
label 1, absent on label 0) on exactly ``AGREEMENT[split]`` of the rows: 0.9 in training,
0.5 at test (in each class), as the negation words of MultiNLI or the colour of Colored MNIST.  Group the
audit by ``cue`` (``with`` / ``without``): a model that takes the shortcut fails the cells
``(with, 0)`` and ``(without, 1)``, a tenth of the training rows and half of the test rows.

Deterministic from ``seed``: the glosses of both categories are split once (a seeded
shuffle, ``TEST_SHARE`` of them for the test rows, so no gloss is in both splits), then
every row's asked category, label, gloss and cue are drawn from numpy generators seeded
with ``seed`` and the split.  Glosses are the definition before the first example
(``; "...``), 3 to ``MAX_WORDS`` words.  The data file is read from ``path``, else the
``FAIRFIX_WORDNET`` environment variable, else ``DATA_NOUN``.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fairfix import errors
from fairfix.datasets.digits_color import _exact_share

DATA_NOUN = "/usr/share/wordnet/data.noun"
ENV = "FAIRFIX_WORDNET"
#: lex_filenum -> the word the question asks about (lexnames(5WN): noun.animal, noun.plant).
CATEGORIES = {5: "animal", 20: "plant"}
CUE = "(so to speak)"
GROUPS = ("with", "without")  # the cue present / absent
AGREEMENT = {"train": 0.9, "test": 0.5}
ROWS = {"train": 2000, "test": 1000}
SEED = 0
TEST_SHARE = 0.3
MAX_WORDS = 20
TEMPLATE = "a kind of {asked}: {gloss}"


def data_noun(path: str | os.PathLike[str] | None = None) -> Path:
    """The ``data.noun`` file to read: ``path``, else ``$FAIRFIX_WORDNET``, else ``DATA_NOUN``."""
    return Path(path or os.environ.get(ENV) or DATA_NOUN)


def read_glosses(path: str | os.PathLike[str] | None = None) -> Any:
    """The glosses of ``CATEGORIES`` in ``data.noun``: a DataFrame of offset, category, word, gloss.

    Raises
    ------
    fairfix.errors.DataError
        The file is missing or unreadable, or holds no gloss of a category (one line naming it).
    """
    f = data_noun(path)
    try:
        return _read(str(f), f.stat().st_mtime_ns).copy()
    except FileNotFoundError:
        raise errors.DataError(f"{f}: no such file (WordNet 3.0's noun data: apt-get install wordnet-base, "
                               f"or set {ENV} to a data.noun file)") from None
    except OSError as exc:
        raise errors.DataError(f"{f}: cannot read ({exc.strerror or exc})") from None


@lru_cache(maxsize=2)
def _read(f: str, _mtime: int) -> Any:
    import pandas as pd

    rows = []
    with open(f, encoding="latin-1") as fh:  # WordNet 3.0's files are 8-bit; glosses are ASCII
        for line in fh:
            if line.startswith("  "):  # the licence at the top of the file
                continue
            head, bar, gloss = line.partition(" | ")
            fields = head.split()
            if not bar or len(fields) < 5 or not fields[1].isdigit():
                continue
            category = CATEGORIES.get(int(fields[1]))
            text = re.sub(r"\s+", " ", gloss.split('; "')[0]).strip().rstrip(";").strip()
            if category is None or not 3 <= len(text.split()) <= MAX_WORDS:
                continue
            rows.append((fields[0], category, fields[4].replace("_", " "), text))
    frame = pd.DataFrame(rows, columns=["offset", "category", "word", "gloss"])
    for category in CATEGORIES.values():
        if not (frame["category"] == category).sum():
            raise errors.DataError(f"{f}: no gloss filed under noun.{category}: not WordNet's data.noun")
    return frame


def load_wordnet_shortcut(split: str = "train", *, rows: int | None = None, seed: int = SEED,
                          path: str | os.PathLike[str] | None = None) -> Any:
    """The task's ``split`` (``"train"`` or ``"test"``) as a DataFrame.

    Columns: ``text`` (question, gloss and maybe the cue), ``label`` (0/1), ``cue``
    (``with`` / ``without``), ``asked`` and ``category`` (the asked and the gloss's category),
    ``offset`` (the synset's offset in data.noun).  ``rows`` defaults to ``ROWS[split]``.
    """
    import pandas as pd

    if split not in AGREEMENT:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    n = ROWS[split] if rows is None else int(rows)
    if n < 2:
        raise ValueError(f"rows must be at least 2, not {rows!r}")
    glosses = read_glosses(path)
    test_rows = np.random.default_rng([seed, 2]).random(len(glosses)) < TEST_SHARE
    pool = glosses[test_rows if split == "test" else ~test_rows].reset_index(drop=True)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    names = list(CATEGORIES.values())
    label = _exact_share(rng, n, 0.5).astype(np.int64)
    asked = rng.integers(len(names), size=n)
    filed = np.where(label == 1, asked, 1 - asked)  # the category of the gloss each row shows
    by_category = [np.flatnonzero(pool["category"].to_numpy() == c) for c in names]
    if not all(len(ids) for ids in by_category):
        raise errors.DataError(f"{data_noun(path)}: too few glosses for the {split} split")
    picks = np.array([by_category[c][rng.integers(len(by_category[c]))] for c in filed])
    agree = np.zeros(n, dtype=bool)
    for c in (0, 1):  # exactly AGREEMENT[split] of each class: the four cells have fixed sizes
        ids = np.flatnonzero(label == c)
        agree[ids] = _exact_share(rng, len(ids), AGREEMENT[split])
    cue = np.where(agree, label == 1, label == 0)
    chosen = pool.iloc[picks].reset_index(drop=True)
    text = [TEMPLATE.format(asked=names[a], gloss=g) + (f" {CUE}" if c else "")
            for a, g, c in zip(asked, chosen["gloss"], cue, strict=True)]
    return pd.DataFrame({
        "text": text, "label": label, "cue": np.where(cue, GROUPS[0], GROUPS[1]),
        "asked": [names[a] for a in asked], "category": chosen["category"].to_numpy(),
        "offset": chosen["offset"].to_numpy(),
    })

