"""The correction's checkpoints: one folder per plan, resumable after an interruption.

The unit of work is one adapter of the guard's evidence: a cross-fitted fold (or the plain
split) for one plan, trained for the whole budget and judged on its held-out rows.  Each unit
is seeded on its own, so a run resumed after an interruption redoes only the units that had
not finished and ends exactly as the uninterrupted run.  ``checkpoint/<plan>_<unit>.safetensors``
holds the held-out rows' classes at every candidate, ``<plan>_<unit>.json`` the loss history
and the run's key (:func:`run_key`: the rows, the options, the base model and the detector),
so ``--resume`` continues only the same run.  Nothing is unpickled: tensors are safetensors,
the rest JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fairfix import errors
from fairfix.models.base import Model

if TYPE_CHECKING:
    from fairfix.correct.config import CorrectConfig


def digest(obj: Any, h: Any = None) -> Any:
    """sha256 over tensors, arrays and JSON-able values, in a fixed order."""
    import hashlib

    h = h or hashlib.sha256()
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            digest(obj[k], h)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, np.ndarray):
        h.update(f"{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())
    return h


def run_key(model: Model, detector: Any, data: dict[str, Any], split: Any, config: CorrectConfig
            ) -> dict[str, str]:
    """What a checkpoint was written for: the rows and split, the options, the base, the detector."""
    opts = asdict(config)
    return {
        # callables (the out-of-fold risk of mode none) are made from what is hashed here
        "data": digest({"data": {k: v for k, v in data.items() if not callable(v)},
                        "split": [] if split is None else list(split)}).hexdigest(),
        "options": digest(opts).hexdigest(),
        "model": str(model.digest) if model.digest else digest(model.module.state_dict()).hexdigest(),
        "detector": digest({"state": detector.module.state_dict(), "layer": detector.layer,
                             "tau": detector.tau, "minority": list(map(str, detector.minority))}).hexdigest(),
    }


def save_unit(path: Path, name: str, adapted: np.ndarray, history: dict[str, list[float]], *,
              key: dict[str, str], config: CorrectConfig) -> None:
    """After one adapter of the guard's evidence (a fold, or the plain split) has been trained and judged.

    ``adapted (budgets, strengths, rows)``: the classes its held-out rows got at each candidate;
    atomic renames, the JSON last, so a listed unit is a complete one.  A write that fails (disk
    full, read-only) is exit 2 naming the checkpoint, not exit 3.
    """
    from fairfix.report.io import write_error

    try:
        _save_unit(path, name, adapted, history, key=key, config=config)
    except Exception as exc:
        failed = write_error(path, exc)
        if failed is not None:
            raise failed from exc
        raise


def _save_unit(path: Path, name: str, adapted: np.ndarray, history: dict[str, list[float]], *,
               key: dict[str, str], config: CorrectConfig) -> None:
    import os

    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)  # under .OUT.checkpoint/, whose folder was checked before any work
    tmp = path / f".{name}.safetensors.tmp"
    save_file({"adapted": torch.from_numpy(np.ascontiguousarray(adapted, dtype=np.int64))}, str(tmp))
    os.replace(tmp, path / f"{name}.safetensors")
    meta = {"unit": name, "history": history, "config": asdict(config), "key": key}
    (path / f".{name}.json.tmp").write_text(json.dumps(meta))
    os.replace(path / f".{name}.json.tmp", path / f"{name}.json")


def check_checkpoint(path: Path, key: dict[str, str], strict: bool = True) -> bool:
    """Whether the checkpoint folder ``path`` was written for this run (``key``).

    A checkpoint written for other data, options, base or detector is refused (UsageError,
    exit 2) when ``strict``; otherwise False (train from scratch).
    """
    metas = sorted(path.glob("*.json"))
    for meta_path in metas:
        try:
            meta = json.loads(meta_path.read_text())
            saved_key = meta["key"]
            if not isinstance(saved_key, dict):
                raise ValueError("no key")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if not strict:
                return False
            raise errors.UsageError(f"--resume: {meta_path} is not a checkpoint of this fairfix "
                                    f"({' '.join(str(exc).split()) or type(exc).__name__}); remove {path}") from None
        differs = [k for k in ("data", "options", "model", "detector") if saved_key.get(k) != key[k]]
        if differs:
            if not strict:
                return False
            raise errors.UsageError(f"--resume: the checkpoint at {path} was written for other "
                                    f"{', '.join(differs)} than this run's; rerun without --resume (and --force)")
    return True


def load_unit(path: Path, name: str) -> dict[str, Any] | None:
    """A completed unit of a checked checkpoint (:func:`check_checkpoint`), or None."""
    from fairfix.models.base import load_safetensors

    if not (path / f"{name}.json").is_file():
        return None
    meta = json.loads((path / f"{name}.json").read_text())
    adapted = load_safetensors(path / f"{name}.safetensors")["adapted"].numpy()
    return {"adapted": adapted, "history": meta["history"]}
