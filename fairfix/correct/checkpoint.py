"""The correction's checkpoints: one folder per plan, resumable after an interruption.

``checkpoint/<plan>/`` holds ``epoch_<k>.safetensors`` (the LoRA weights after epoch k),
``optimizer.safetensors`` (the optimizer's tensors and the RNG states) and ``state.json``
(epoch, sweep rows, history, the config and the run's key).  The key (:func:`run_key`)
digests what the run depends on -- the training and validation rows, the options but
``epochs``, the base model and the detector -- so ``--resume`` continues only the same run.
Nothing is unpickled: tensors are safetensors, the rest JSON.
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
    from fairfix.correct.fairnet import CorrectConfig


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


def run_key(model: Model, detector: Any, train: dict[str, Any], val: dict[str, Any],
            config: CorrectConfig) -> dict[str, str]:
    """What a checkpoint was written for: the data, the options (all but ``epochs``), the base, the detector."""
    opts = {k: v for k, v in asdict(config).items() if k != "epochs"}
    return {
        "data": digest({"train": train, "val": val}).hexdigest(),
        "options": digest(opts).hexdigest(),
        "model": str(model.digest) if model.digest else digest(model.module.state_dict()).hexdigest(),
        "detector": digest({"state": detector.module.state_dict(), "layer": detector.layer,
                             "tau": detector.tau, "minority": list(map(str, detector.minority))}).hexdigest(),
    }


def save_checkpoint(path: Path, epoch: int, sweep: list, state: dict[str, torch.Tensor],
                     config: CorrectConfig, *, key: dict[str, str], opt: Any, rng: dict[str, torch.Tensor],
                     history: list[float], hinge_history: list[float]) -> None:
    """After each completed epoch: its adapter weights, the optimiser and RNG states, the sweep so far.

    Also the key of the run; atomic renames, ``state.json`` last, so it names only complete epochs.
    """
    from fairfix.report.io import write_error

    try:
        _save_checkpoint(path, epoch, sweep, state, config, key=key, opt=opt, rng=rng, history=history,
                         hinge_history=hinge_history)
    except Exception as exc:
        failed = write_error(path, exc)  # disk full, read-only: exit 2 naming the checkpoint, not exit 3
        if failed is not None:
            raise failed from exc
        raise


def _save_checkpoint(path: Path, epoch: int, sweep: list, state: dict[str, torch.Tensor],
                     config: CorrectConfig, *, key: dict[str, str], opt: Any, rng: dict[str, torch.Tensor],
                     history: list[float], hinge_history: list[float]) -> None:
    import os

    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)  # under .OUT.checkpoint/, whose folder was checked before any work
    tmp = path / f".epoch_{epoch}.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path / f"epoch_{epoch}.safetensors")
    osd = opt.state_dict()
    tensors = {f"opt.{i}.{name}": v.detach().contiguous() for i, st in osd["state"].items()
               for name, v in st.items() if isinstance(v, torch.Tensor)}
    tensors.update({f"rng.{k}": v.contiguous() for k, v in rng.items()})
    save_file(tensors, str(path / ".optimizer.safetensors.tmp"))
    os.replace(path / ".optimizer.safetensors.tmp", path / "optimizer.safetensors")
    meta = {"epoch": epoch, "sweep": sweep, "config": asdict(config), "key": key,
            "param_groups": osd["param_groups"], "history": history, "hinge_history": hinge_history}
    (path / ".state.json.tmp").write_text(json.dumps(meta))
    os.replace(path / ".state.json.tmp", path / "state.json")


def load_checkpoint(path: Path, module: torch.nn.Module, key: dict[str, str], strict: bool = True
                     ) -> dict[str, Any] | None:
    """The checkpoint of an interrupted run, checked against ``key``.

    A checkpoint written for other data, options, base or detector is refused (UsageError,
    exit 2) when ``strict``; otherwise ignored (None: train from scratch).
    """
    from fairfix.models.base import load_safetensors

    try:
        meta = json.loads((path / "state.json").read_text())
        epoch = int(meta["epoch"])
        saved_key = meta["key"]
        if not isinstance(saved_key, dict) or epoch < 1:
            raise ValueError("no key")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if not strict:
            return None
        raise errors.UsageError(f"--resume: {path / 'state.json'} is not a checkpoint of this fairfix "
                                f"({' '.join(str(exc).split()) or type(exc).__name__}); remove {path}") from None
    differs = [k for k in ("data", "options", "model", "detector") if saved_key.get(k) != key[k]]
    if differs:
        if not strict:
            return None
        raise errors.UsageError(f"--resume: the checkpoint at {path} was written for other "
                                f"{', '.join(differs)} than this run's; rerun without --resume (and --force)")
    states = [load_safetensors(path / f"epoch_{e}.safetensors") for e in range(1, epoch + 1)]
    extra = load_safetensors(path / "optimizer.safetensors")
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for name, v in extra.items():
        if name.startswith("opt."):
            _, i, field_name = name.split(".", 2)
            opt_state.setdefault(int(i), {})[field_name] = v
    return {"epoch": epoch, "sweep": list(meta["sweep"]), "states": states,
            "optimizer": {"state": opt_state, "param_groups": meta["param_groups"]},
            "rng": {"shuffle": extra["rng.shuffle"], "torch": extra["rng.torch"]},
            "history": list(meta.get("history", [])), "hinge_history": list(meta.get("hinge_history", []))}
