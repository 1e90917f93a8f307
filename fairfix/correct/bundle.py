"""Bundles: a base model reference, a PEFT adapter, a detector, prototypes, tau and reports.

Layout of a bundle directory (DESIGN.md section 5)::

    fairfix.json                 manifest: kind "bundle", base path + sha256, tau, sweep, choice
    adapter/adapter_config.json  PEFT's own format, loadable with PeftModel.from_pretrained
    adapter/adapter_model.safetensors
    detector/fairfix.json, detector/detector.safetensors
    prototypes.safetensors       cells (C, 2, D), counts (C, 2), reference (C, D)
    before.json, after.json      fairfix.audit/1 of the base and of the corrected model
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fairfix import errors

SCHEMA = "fairfix.bundle/1"


def save_bundle(out: str | Path, corrected: Any, record: dict[str, Any], *, reports: dict[str, Any],
                extra_config: dict[str, Any] | None = None, force: bool = False) -> dict[str, Any]:
    """Write ``corrected`` (a :class:`~fairfix.correct.fairnet.CorrectedModel`) as a bundle directory."""
    from safetensors.torch import save_file

    from fairfix.artifacts import write_artifact

    def write(tmp: Path) -> None:
        corrected.peft_model.save_pretrained(str(tmp / "adapter"), safe_serialization=True)
        corrected.detector.save(tmp / "detector")
        save_file({k: v.contiguous().float() if v.is_floating_point() else v.contiguous()
                   for k, v in corrected.prototypes.items()}, str(tmp / "prototypes.safetensors"))
        for name, rep in reports.items():
            (tmp / f"{name}.json").write_text(json.dumps(rep, indent=2, allow_nan=False) + "\n")

    base = corrected.base
    return write_artifact(
        out, kind="bundle", schema=SCHEMA, write_files=write, force=force,
        config={**record["config"], **(extra_config or {})},
        extra={
            "base_model": {"path": str(base.path) if base.path else None, "sha256": base.digest,
                           "kind": base.kind},
            "tap_layer": corrected.tap_layer,
            "tau": corrected.tau,
            "adapter_enabled": corrected.enabled,
            "gate": corrected.gate,
            "correction": record["correction"],
            "targets": record["targets"],
            "classes": base.classes,
            "positive": base.positive,
            "guard": record["guard"],
            "chosen": record["chosen"],
            "base_validation": record["base_validation"],
            "sweep": record["sweep"],
            "loss_history": record.get("loss_history", []),
        },
    )


def load_bundle(path: str | Path, manifest: dict[str, Any], base: Any) -> Any:
    """Load a bundle whose manifest was verified, on ``base``: its base model, loaded and checked.

    ``fairfix.models.load_model`` finds the base (the manifest's path or ``--base``), loads it and
    refuses one whose sha256 differs; this module does not import the model registry.
    """
    from peft import PeftModel

    from fairfix.correct.fairnet import CorrectedModel
    from fairfix.correct.gating import ADAPTER
    from fairfix.detect.fit import load_detector
    from fairfix.models.base import load_safetensors
    from fairfix.models.offline import hub_offline

    p = Path(path)
    detector = load_detector(p / "detector", base)
    _check_adapter_files(p, manifest)
    try:
        with hub_offline():  # a local folder only: peft asks the hub when a file is missing
            peft_model = PeftModel.from_pretrained(base.module, str(p / "adapter"), adapter_name=ADAPTER,
                                                   local_files_only=True)
    except Exception as exc:  # peft raises many types for a bad adapter folder
        raise errors.ModelError(f"{p / 'adapter'}: cannot load the PEFT adapter ({exc})") from exc
    peft_model.eval()
    base.module = peft_model.base_model.model
    protos = load_safetensors(p / "prototypes.safetensors")
    return CorrectedModel(base, peft_model, detector, tau=manifest.get("tau"),
                          enabled=bool(manifest.get("adapter_enabled")), tap_layer=manifest["tap_layer"],
                          gate=manifest.get("gate", "detector"),  # checked by models._load_bundle
                          prototypes={k: torch.as_tensor(v) for k, v in protos.items()},
                          info={"targets": manifest.get("targets", [])}, path=p,
                          digest=manifest.get("digest"), manifest=manifest)


ADAPTER_FILES = ("adapter/adapter_config.json", "adapter/adapter_model.safetensors")


def _check_adapter_files(p: Path, manifest: dict[str, Any]) -> None:
    """The adapter PEFT will read: its two files listed in the manifest (so hashed), nothing else."""
    from fairfix.artifacts import MANIFEST, member

    files = manifest.get("files") or {}
    for name in ADAPTER_FILES:
        if name not in files:
            raise errors.ModelError(f"{p}: {name} is not listed in {MANIFEST}; the bundle has no adapter")
        member(p, name)
    pickled = [n for n in files if n.startswith("adapter/") and n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    if pickled:
        raise errors.ModelError(f"{p}: pickled adapter file {pickled[0]}; fairfix loads safetensors only")
