"""The generated coloured digits: deterministic, Colored-MNIST colour/label statistics, embedded names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairfix.data.frames import EMBEDDED, embedded_file, embedded_table, read_frame
from fairfix.datasets.digits_color import N_TRAIN, PIXELS, load_digits_color


@pytest.fixture(scope="module")
def splits() -> dict[str, pd.DataFrame]:
    return {s: load_digits_color(s) for s in ("train", "test")}


def agreement(frame: pd.DataFrame) -> float:
    """Share of rows whose colour says the label (red = 1, green = 0)."""
    return float(((frame["colour"] == "red") == (frame["label"] == 1)).mean())


def test_split_sizes_and_columns(splits):
    train, test = splits["train"], splits["test"]
    assert len(train) == N_TRAIN and len(train) + len(test) == 1797
    assert set(train["image"]).isdisjoint(test["image"])
    assert list(train.columns) == ["image", "digit", "label", "colour", *PIXELS]
    assert len(PIXELS) == 192 and PIXELS[0] == "p0" and PIXELS[-1] == "p191"
    for frame in (train, test):
        assert set(frame["colour"]) == {"red", "green"}
        assert frame[PIXELS].to_numpy().min() >= 0.0 and frame[PIXELS].to_numpy().max() <= 1.0
        assert (frame["label"] == (frame["digit"] >= 5)).all()  # no label noise by default


def test_colour_agrees_with_label_in_train_not_in_test(splits):
    assert agreement(splits["train"]) == pytest.approx(0.9, abs=0.005)
    assert agreement(splits["test"]) == pytest.approx(0.5, abs=0.01)
    for frame in splits.values():  # both classes are common in both splits
        assert 0.4 < frame["label"].mean() < 0.6


def test_the_digit_sits_in_its_colour_channel_only(splits):
    frame = splits["train"]
    px = frame[PIXELS].to_numpy().reshape(len(frame), 3, 64)
    red = (frame["colour"] == "red").to_numpy()
    assert (px[red, 1:] == 0).all() and (px[~red][:, [0, 2]] == 0).all()
    assert (px[red, 0].sum(1) > 0).all() and (px[~red, 1].sum(1) > 0).all()
    from sklearn.datasets import load_digits

    images = load_digits().images.reshape(-1, 64) / 16.0
    ink = px.sum(1)  # (N, 64): the image, whichever channel holds it
    np.testing.assert_allclose(ink, images[frame["image"].to_numpy()], atol=1e-6)
    assert (load_digits().target[frame["image"].to_numpy()] == frame["digit"].to_numpy()).all()


def test_generation_is_deterministic_and_copies(splits):
    again = load_digits_color("train")
    pd.testing.assert_frame_equal(again, splits["train"])
    again.loc[0, "label"] = 99  # callers get their own copy
    assert load_digits_color("train").loc[0, "label"] != 99


def test_label_noise_flips_an_exact_share():
    noisy = load_digits_color("train", label_noise=0.1)
    flipped = (noisy["label"] != (noisy["digit"] >= 5)).mean()
    assert flipped == pytest.approx(0.1, abs=1e-3)
    assert agreement(noisy) == pytest.approx(0.9, abs=0.005)
    with pytest.raises(ValueError, match="split"):
        load_digits_color("validation")


def test_embedded_names_read_everywhere():
    for name in ("digits_color:train", "digits_color:test"):
        assert name in EMBEDDED
        assert embedded_file(name) is None  # generated: the name is the fingerprint
        table = embedded_table(name)
        assert table is not None and table.num_rows == (N_TRAIN if name.endswith("train") else 597)
        frame = read_frame(name)
        assert frame.shape[1] == 196
    assert embedded_file("adult:train").endswith("adult.data.gz")
