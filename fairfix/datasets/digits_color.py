"""Coloured digits: the Colored-MNIST construction on scikit-learn's bundled 8x8 digits.

scikit-learn ships the 1,797 handwritten digits of the UCI "Optical Recognition
of Handwritten Digits" set (``sklearn.datasets.load_digits``; no download).
As in Colored MNIST (Arjovsky et al., "Invariant Risk Minimization", 2019):

- ``label`` is 1 for digits 5-9 and 0 for 0-4 (``label_noise`` flips exactly that
  share of the labels; Colored MNIST flips 25%, here the default is none, see below);
- ``colour`` is ``red`` for label 1 and ``green`` for label 0 on exactly
  ``AGREEMENT[split]`` of the rows (the opposite colour on the rest): 0.9 in
  training, where colour is a cue almost as good as the shape and far easier
  to learn, and 0.5 at test, where colour says nothing;
- the image (scaled to [0, 1]) goes into the red or the green channel of a
  3 x 8 x 8 picture, flattened channel-major into the columns ``p0`` ... ``p191``
  (``p0``-``p63`` red, ``p64``-``p127`` green, ``p128``-``p191`` blue, always 0).

A model that takes the colour shortcut fails the (group, label) cells whose
colour disagrees with their label: ``(green, 1)`` and ``(red, 0)``, a tenth of
the training rows but half of the test rows.  Group the audit by ``colour``.

Why no label noise by default: with 10% of the labels flipped the shape is no
better a cue than the colour, a small CNN fits the colour within an epoch and
memorises the flipped labels after that, so early stopping keeps a colour-only
model (test accuracy 0.5, worst-group accuracy 0).  Without noise the CNN learns
the shape too and keeps a partial shortcut: near-perfect on the cells whose
colour agrees with the label, clearly worse on the others (test worst-group
accuracy 0.5-0.75 against about 1.0 on the agreeing cells).

The split is fixed: a seeded shuffle of the 1,797 images, the first
``N_TRAIN`` for training and the rest for test.  Every draw comes from numpy
generators seeded with ``SEED`` and the split, so both splits are the same on
every machine.  Columns: ``image`` (index in ``load_digits``), ``digit``,
``label``, ``colour``, ``p0`` ... ``p191``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

SEED = 0
N_TRAIN = 1200
LABEL_NOISE = 0.0
AGREEMENT = {"train": 0.9, "test": 0.5}
CHANNELS, SIZE = 3, 8
PIXELS = [f"p{i}" for i in range(CHANNELS * SIZE * SIZE)]
COLOURS = ("red", "green")  # channel 0 and channel 1; red goes with label 1


def load_digits_color(split: str = "train", *, label_noise: float = LABEL_NOISE) -> Any:
    """The coloured digits as a pandas DataFrame; ``split`` is ``"train"`` or ``"test"``.

    ``label_noise`` flips that share of the labels (before colouring, as Colored MNIST does).
    """
    if split not in AGREEMENT:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if not 0.0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must lie in [0, 0.5), not {label_noise!r}")
    return _build(split, float(label_noise)).copy()


@lru_cache(maxsize=4)
def _build(split: str, label_noise: float) -> Any:
    import pandas as pd
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # (N, 8, 8) in [0, 1]
    order = np.random.default_rng(SEED).permutation(len(images))
    rows = np.sort(order[:N_TRAIN] if split == "train" else order[N_TRAIN:])
    n = len(rows)
    rng = np.random.default_rng([SEED, 0 if split == "train" else 1])
    digit = digits.target[rows].astype(np.int64)
    label = (digit >= 5).astype(np.int64)
    flip = _exact_share(rng, n, label_noise)
    label[flip] = 1 - label[flip]
    agree = _exact_share(rng, n, AGREEMENT[split])
    red = np.where(agree, label == 1, label == 0)  # (N,) bool
    pixels = np.zeros((n, CHANNELS, SIZE * SIZE), dtype=np.float32)
    flat = images[rows].reshape(n, SIZE * SIZE)
    pixels[red, 0] = flat[red]
    pixels[~red, 1] = flat[~red]
    frame = pd.DataFrame(pixels.reshape(n, -1), columns=PIXELS)
    frame.insert(0, "colour", np.where(red, COLOURS[0], COLOURS[1]))
    frame.insert(0, "label", label)
    frame.insert(0, "digit", digit)
    frame.insert(0, "image", rows.astype(np.int64))
    return frame


def _exact_share(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """A boolean mask with exactly ``round(n * share)`` seeded-random rows set."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: int(round(n * share))]] = True
    return mask
