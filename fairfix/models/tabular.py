"""The fairfix tabular MLP: preprocessing that travels with the weights, and ERM training.

The model directory carries everything needed to score raw rows of new data:
feature columns, numeric means and scales, category vocabularies (with an
unknown bucket that also takes missing values) and the label vocabulary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fairfix import errors
from fairfix.data.labels import encode_labels
from fairfix.models.base import Model, build_checked, check_state_dict, load_safetensors
from fairfix.models.erm import ErmConfig, erm_fit, split_rows

WEIGHTS = "model.safetensors"
MAX_CATEGORIES = 200  # per column; rarer values share the unknown bucket


@dataclass
class Preprocessor:
    """Raw rows -> float32 matrix: standardised numerics, one-hot categoricals (+ unknown)."""

    numeric: list[str] = field(default_factory=list)
    means: list[float] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    vocabularies: list[list[Any]] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """Input columns in the order they were given."""
        return self.numeric + self.categorical

    @property
    def width(self) -> int:
        """Size of the encoded vector."""
        return len(self.numeric) + sum(len(v) + 1 for v in self.vocabularies)

    @classmethod
    def fit(cls, frame: Any, features: Sequence[str]) -> Preprocessor:
        """Learn scaling and vocabularies from a training DataFrame."""
        import pandas as pd

        pre = cls()
        for col in features:
            s = frame[col]
            if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                x = s.astype("float64")
                mean = float(x.mean()) if x.notna().any() else 0.0
                std = float(x.std(ddof=0)) if x.notna().sum() > 1 else 0.0
                pre.numeric.append(col)
                pre.means.append(mean)
                pre.scales.append(std if std > 0 and math.isfinite(std) else 1.0)
            else:
                counts = s.dropna().map(_key).value_counts(sort=False)
                top = counts.sort_values(ascending=False, kind="stable").index[:MAX_CATEGORIES]
                pre.categorical.append(col)
                pre.vocabularies.append(sorted(top, key=str))
        return pre

    def transform(self, frame: Any, filled: dict[str, int] | None = None) -> np.ndarray:
        """Encode a DataFrame holding (at least) the input columns.

        A missing numeric value becomes the training mean; ``filled`` (when given) counts
        them per column, so that the CLI can say so instead of filling silently.
        """
        import pandas as pd

        n = len(frame)
        out = np.zeros((n, self.width), dtype=np.float32)
        for j, (col, m, s) in enumerate(zip(self.numeric, self.means, self.scales, strict=True)):
            try:
                x = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                from fairfix.data.frames import not_numeric

                raise not_numeric(frame, col) from exc
            missing = np.isnan(x)
            if filled is not None and missing.any():
                filled[col] = filled.get(col, 0) + int(missing.sum())
            x = np.where(missing, m, x)
            out[:, j] = (x - m) / s
        offset = len(self.numeric)
        for col, vocab in zip(self.categorical, self.vocabularies, strict=True):
            index = {v: i + 1 for i, v in enumerate(vocab)}  # 0: unknown / missing
            # Look each distinct value up once (a per-row map dominated predict's run time);
            # factorize gives missing values the code -1, which picks the trailing 0 (unknown).
            inverse, uniques = pd.factorize(frame[col])
            lookup = np.array([index.get(_key(u), 0) for u in uniques] + [0], dtype=np.int64)
            codes = lookup[inverse]
            out[np.arange(n), offset + codes] = 1.0
            offset += len(vocab) + 1
        return out


def _key(v: Any) -> Any:
    """Vocabulary key: JSON-stable (numpy scalars to Python, strings stripped)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


class TabularMLP(nn.Module):
    """``blocks`` of Linear -> ReLU -> Dropout, then a linear ``head``.

    Named layers: ``blocks.i`` (output of block i), ``blocks.i.linear``; the head's
    input (the final representation) is the output of the last block.
    """

    def __init__(self, n_in: int, hidden: Sequence[int], n_classes: int, dropout: float = 0.1):
        super().__init__()
        widths = [n_in, *hidden]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                _named(
                    ("linear", nn.Linear(a, b)),
                    ("act", nn.ReLU()),
                    ("drop", nn.Dropout(dropout)),
                )
            )
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.head = nn.Linear(widths[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, F)
        """Logits (B, C) of the encoded inputs ``x`` (B, F)."""
        for block in self.blocks:
            x = block(x)  # (B, H_i)
        return self.head(x)  # (B, C)


def _named(*items: tuple[str, nn.Module]) -> Any:
    from collections import OrderedDict

    return OrderedDict(items)


@dataclass
class TrainConfig(ErmConfig):
    """Hyper-parameters of the MLP's ERM training: the loop's (:class:`ErmConfig`) and its shape."""

    hidden: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check({
            "dropout": 0.0 <= self.dropout < 1.0,
            "hidden": len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden),
        })


class TabularModel(Model):
    """A fairfix tabular MLP with its preprocessing."""

    kind = "tabular_mlp"

    def __init__(self, module: TabularMLP, pre: Preprocessor, classes: Sequence[Any], positive: Any, **kw: Any):
        super().__init__(module, classes, positive, pre.columns, **kw)
        self.pre = pre
        self.numeric_columns = list(pre.numeric)
        self.missing_filled: dict[str, int] = {}  # numeric cells filled with the training mean, per column

    def encode(self, frame: Any) -> dict[str, torch.Tensor]:
        """``{"x": (B, F) float32}`` from raw rows (counting missing numeric cells in ``missing_filled``)."""
        return {"x": torch.from_numpy(self.pre.transform(frame, self.missing_filled))}

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, C)``."""
        return self.module(inputs["x"])

    @property
    def default_tap_layer(self) -> str:
        """The first hidden layer: it still carries group information the head has discarded."""
        return "blocks.0"

    @property
    def default_lora_targets(self) -> list[str]:
        """Linear layers of the blocks after the tap (those that produce the head's input)."""
        n = len(self.module.blocks)  # type: ignore[arg-type]
        return [f"blocks.{i}.linear" for i in range(1, n)] or ["blocks.0.linear"]

    def save(
        self, out: str | Path, *, config: dict[str, Any], training: dict[str, Any], force: bool = False,
        export: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write the model directory (manifest + safetensors); ``export``: see :meth:`Model.write_model_dir`."""
        return self.write_model_dir(
            out, lambda tmp: self.write_state_dict(tmp / WEIGHTS), config=config, training=training, force=force,
            export=export,
            extra={
                "architecture": {"n_in": self.pre.width, "hidden": list(config["hidden"]),
                                 "n_classes": len(self.classes), "dropout": config["dropout"]},
                "preprocessing": asdict(self.pre),
            },
        )


def load_tabular(path: Path, manifest: dict[str, Any]) -> TabularModel:
    """Load a tabular model directory whose manifest was verified."""
    try:
        arch = manifest["architecture"]
        pre = Preprocessor(**manifest["preprocessing"])
        n_in, hidden, n_classes = int(arch["n_in"]), [int(h) for h in arch["hidden"]], int(arch["n_classes"])
        dropout = float(arch.get("dropout", 0.0))
        if min([n_in, n_classes, *hidden]) < 1:
            raise ValueError("layer widths must be >= 1")
        classes, positive = manifest["classes"], manifest.get("positive")
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.ModelError(f"{path}: manifest does not describe a tabular model ({exc})") from exc
    if pre.width != n_in:
        raise errors.ModelError(f"{path}: preprocessing width {pre.width} != model input {n_in}")
    # sizes from the manifest are checked against the weights' header before torch allocates them
    module = build_checked(lambda: TabularMLP(n_in, hidden, n_classes, dropout), path / WEIGHTS,
                           str(path / WEIGHTS))
    state = load_safetensors(path / WEIGHTS)
    check_state_dict(module, state, str(path / WEIGHTS))
    module.load_state_dict(state)
    return TabularModel(module, pre, classes, positive, path=path, digest=manifest.get("digest"),
                        manifest=manifest)


def label_vocabulary(values: Any, positive: Any = None) -> tuple[list[Any], Any]:
    """Sorted label classes of a training column and the positive class (binary only)."""
    from fairfix.metrics.counts import _sorted_values, choose_positive, normalize_values

    raw = [v for v in dict.fromkeys(values.dropna().tolist())]
    norm = normalize_values(raw)
    classes = list(_sorted_values(set(norm)))
    if len(classes) < 2:
        raise errors.DataError(f"label column {values.name!r} has {len(classes)} distinct value(s); need at least two")
    pos = choose_positive(classes, positive)[0] if len(classes) == 2 else None
    return classes, pos


def train_tabular(
    frame: Any,
    *,
    label: str,
    features: Sequence[str],
    config: TrainConfig,
    positive: Any = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> tuple[TabularModel, dict[str, Any]]:
    """ERM training with early stopping on a validation split.

    Reproducible bit for bit on CPU for a given ``config.seed``: every random
    draw comes from generators seeded here, and the global torch RNG is
    restored afterwards (no global seeding leaks out).

    Returns
    -------
    model, info
        ``info`` has the epochs run, the best epoch and validation metrics.
    """
    if frame[label].isna().any():
        raise errors.DataError(f"label column {label!r} has {int(frame[label].isna().sum())} empty value(s)")
    classes, pos = label_vocabulary(frame[label], positive)
    y_all = encode_labels(frame[label], classes)
    tr_idx, val_idx = split_rows(len(frame), config.val_fraction, config.seed)
    pre = Preprocessor.fit(frame.iloc[tr_idx], features)
    x_all = torch.from_numpy(pre.transform(frame))
    module, info = erm_fit(
        lambda: TabularMLP(pre.width, config.hidden, len(classes), config.dropout),
        x_all, torch.from_numpy(y_all), train_idx=tr_idx, val_idx=val_idx, config=config,
        progress=progress,
    )
    return TabularModel(module, pre, classes, pos), info


def manifest_json(manifest: dict[str, Any]) -> str:
    """Pretty JSON of a manifest (for `--format json` of train)."""
    return json.dumps(manifest, indent=2)
