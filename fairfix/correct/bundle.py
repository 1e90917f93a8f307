"""Bundles: a base model reference, a PEFT adapter, a detector, prototypes, tau and reports.

Layout of a bundle directory (DESIGN.md section 5)::

    fairfix.json                 manifest: kind "bundle", base path + sha256, tau, sweep, choice
    adapter/adapter_config.json  PEFT's own format, loadable with PeftModel.from_pretrained
    adapter/adapter_model.safetensors
    detector/fairfix.json, detector/detector.safetensors
    prototypes.safetensors       cells (C, 2, D), counts (C, 2), reference (C, D)
    before.json, after.json      fairfix.audit/1 of the base and of the corrected model

A bundle of several attributes (progressive correction) holds ``adapter/<name>/`` per
attribute (PEFT's layout for named adapters), ``detectors/<name>/`` and
``prototypes/<name>.safetensors``, and lists them in the manifest's ``attributes``
(:func:`save_progressive_bundle`; docs/artifacts.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from fairfix import errors

SCHEMA = "fairfix.bundle/1"
#: Where a bundle holds its base model when the base was never saved (a model trained or built in
#: memory through the Python API): the manifest's ``base_model.path`` is then this folder, inside the bundle.
EMBEDDED_BASE = "base"

#: Writes a base model into the folder it is given and returns its manifest (:func:`save_correction`).
BaseWriter = Callable[[Path], dict[str, Any]]


def save_correction(out: str | Path, corrected: Any, result: dict[str, Any], *, label: str, groups: Sequence[str],
                    config: Any, force: bool = False, write_base: BaseWriter | None = None,
                    extra_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the bundle of a correction (``fairfix correct``, the Python API's ``Bundle.save``); the manifest.

    ``result``: :func:`fairfix.correct.run.correct`'s (one attribute) or
    :func:`fairfix.correct.progressive.correct_many`'s (several ``groups``).  ``write_base``: for a
    base model that has no folder of its own, writes it inside the bundle (:data:`EMBEDDED_BASE`).
    ``extra_config``: more keys for the manifest's config (a recipe's name).
    """
    from dataclasses import asdict

    reports = {"before": result["before"], "after": result["after"], "compare": result["compare"]}
    if len(groups) > 1:
        return save_progressive_bundle(out, corrected, force=force, reports=reports, write_base=write_base,
                                       config={**asdict(config), "label": label, "group": list(groups),
                                               **(extra_config or {})})
    return save_bundle(out, corrected, result["record"], force=force, reports=reports, write_base=write_base,
                       extra_config={"label": label, "group": groups[0], **(extra_config or {})})


def _base_ref(base: Any, write_base: BaseWriter | None, detectors: Sequence[Any]) -> tuple[dict[str, Any], Any]:
    """The manifest's ``base_model`` and the step that writes an embedded base (it fills the reference in)."""
    ref: dict[str, Any] = {"path": str(base.path) if base.path else None, "sha256": base.digest, "kind": base.kind}

    def embed(tmp: Path) -> None:
        if write_base is None:
            return
        from fairfix.artifacts import digest

        manifest = write_base(tmp / EMBEDDED_BASE)
        ref.update(path=EMBEDDED_BASE, sha256=digest(manifest), embedded=True)
        for det in detectors:  # the detectors name the base they were fitted on
            det.base = {**det.base, "path": EMBEDDED_BASE, "sha256": ref["sha256"]}

    return ref, embed


def save_bundle(out: str | Path, corrected: Any, record: dict[str, Any], *, reports: dict[str, Any],
                extra_config: dict[str, Any] | None = None, force: bool = False,
                write_base: BaseWriter | None = None) -> dict[str, Any]:
    """Write ``corrected`` (a :class:`~fairfix.correct.fairnet.CorrectedModel`) as a bundle directory."""
    from safetensors.torch import save_file

    from fairfix.artifacts import write_artifact

    base = corrected.base
    ref, embed = _base_ref(base, write_base, [corrected.detector])

    def write(tmp: Path) -> None:
        embed(tmp)
        corrected.peft_model.save_pretrained(str(tmp / "adapter"), safe_serialization=True)
        corrected.detector.save(tmp / "detector")
        save_file({k: v.contiguous().float() if v.is_floating_point() else v.contiguous()
                   for k, v in corrected.prototypes.items()}, str(tmp / "prototypes.safetensors"))
        for name, rep in reports.items():
            (tmp / f"{name}.json").write_text(json.dumps(rep, indent=2, allow_nan=False) + "\n")

    return write_artifact(
        out, kind="bundle", schema=SCHEMA, write_files=write, force=force,
        config={**record["config"], **(extra_config or {})},
        extra={
            "base_model": ref,
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
    if "attributes" in manifest:  # several attributes, one named adapter each
        return load_progressive_bundle(p, manifest, base)
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


def _check_adapter_files(p: Path, manifest: dict[str, Any], names: Sequence[str] = ADAPTER_FILES,
                         missing: str = "the bundle has no adapter") -> None:
    """The files PEFT (and fairfix) will read: each listed in the manifest (so hashed); no pickled adapter."""
    from fairfix.artifacts import MANIFEST, member

    files = manifest.get("files") or {}
    for name in names:
        if name not in files:
            raise errors.ModelError(f"{p}: {name} is not listed in {MANIFEST}; {missing}")
        member(p, name)
    pickled = [n for n in files if n.startswith("adapter/") and n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    if pickled:
        raise errors.ModelError(f"{p}: pickled adapter file {pickled[0]}; fairfix loads safetensors only")
    for name in names:
        if name.endswith("adapter_config.json"):
            _check_adapter_sizes(p / name, p / name.replace("adapter_config.json", "adapter_model.safetensors"))


def _check_adapter_sizes(config: Path, weights: Path) -> None:
    """Refuse an adapter config that asks PEFT to build more than its weights hold, before it allocates.

    PEFT builds every LoRA matrix from ``adapter_config.json`` (rank ``r``, ``rank_pattern``,
    ``layer_replication``) and only then loads the weights: a hostile ``"r": 100000`` would
    allocate first.  The ranks are checked against the safetensors header's ``lora_A`` rows.
    """
    import json

    from fairfix.models.base import safetensors_shapes

    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
        ranks = [int(cfg["r"]), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise errors.ModelError(f"{config}: not a LoRA adapter config ({' '.join(str(exc).split())})") from exc
    if cfg.get("layer_replication"):
        raise errors.ModelError(f"{config}: layer_replication is set; fairfix bundles never replicate layers")
    rows = [shape[0] for name, shape in safetensors_shapes(weights).items() if "lora_A" in name and shape]
    if not rows:
        raise errors.ModelError(f"{weights}: holds no LoRA weights (lora_A)")
    if min(ranks) < 1 or max(ranks) > max(rows):
        raise errors.ModelError(f"{config}: rank {max(ranks)} but {weights.name} holds LoRA weights of rank "
                                f"{max(rows)}; refusing before allocating")


# -- several attributes (progressive correction) ------------------------------------------


def save_progressive_bundle(out: str | Path, corrected: Any, *, reports: dict[str, Any],
                            config: dict[str, Any], force: bool = False,
                            write_base: BaseWriter | None = None) -> dict[str, Any]:
    """Write a :class:`~fairfix.correct.progressive.ProgressiveModel` as a bundle directory.

    Its adapters in PEFT's own layout for named adapters (``adapter/<name>/adapter_config.json``
    and ``adapter_model.safetensors``, from one ``save_pretrained``); per attribute, its detector
    (``detectors/<name>/``) and prototypes (``prototypes/<name>.safetensors``); the manifest's
    ordered ``attributes`` list says which adapter, detector, tap layer and gate each one uses.
    """
    from safetensors.torch import save_file

    from fairfix.artifacts import write_artifact

    attrs = corrected.attributes
    base = corrected.base
    ref, embed = _base_ref(base, write_base, [a.detector for a in attrs])

    def write(tmp: Path) -> None:
        embed(tmp)
        corrected.peft_model.save_pretrained(str(tmp / "adapter"), safe_serialization=True)
        (tmp / "detectors").mkdir()
        (tmp / "prototypes").mkdir()
        for a in attrs:
            a.detector.save(tmp / "detectors" / a.adapter)
            save_file({k: v.contiguous().float() if v.is_floating_point() else v.contiguous()
                       for k, v in a.prototypes.items()}, str(tmp / "prototypes" / f"{a.adapter}.safetensors"))
        for name, rep in reports.items():
            (tmp / f"{name}.json").write_text(json.dumps(rep, indent=2, allow_nan=False) + "\n")

    return write_artifact(
        out, kind="bundle", schema=SCHEMA, write_files=write, force=force, config=config,
        extra={
            "base_model": ref,
            # the first attribute's gate at the top, for the single-attribute fields' checks
            "tap_layer": attrs[0].tap_layer,
            "tau": None,
            "adapter_enabled": corrected.enabled,
            "targets": sorted({t for a in attrs for t in a.targets}),
            "classes": base.classes,
            "positive": base.positive,
            "attributes": [{
                "group": a.group, "adapter": a.adapter, "detector": f"detectors/{a.adapter}",
                "prototypes": f"prototypes/{a.adapter}.safetensors", "tap_layer": a.tap_layer, "tau": a.tau,
                "gate": a.gate, "adapter_enabled": a.enabled, "targets": a.targets,
                "fitted_on": a.record.get("fitted_on"), "correction": a.record["correction"],
                "guard": a.record["guard"], "chosen": a.record["chosen"],
                "base_validation": a.record["base_validation"], "sweep": a.record["sweep"],
            } for a in attrs],
        },
    )


def check_attributes(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's ``attributes`` list, each entry's fields checked (ModelError naming the bad one)."""
    import math
    import re

    from fairfix.artifacts import MANIFEST

    attrs = manifest.get("attributes")
    if not isinstance(attrs, list) or not attrs:
        raise errors.ModelError(f"{MANIFEST}: bad 'attributes' ({attrs!r})")
    seen: set[str] = set()
    for i, a in enumerate(attrs):
        where = f"{MANIFEST}: attributes[{i}]"
        if not isinstance(a, dict):
            raise errors.ModelError(f"{where}: not a mapping")
        name, tau = a.get("adapter"), a.get("tau")
        checks = [
            ("group", isinstance(a.get("group"), str)),
            ("adapter", isinstance(name, str) and re.fullmatch(r"[A-Za-z_][0-9A-Za-z_]{0,80}", name) is not None
             and name not in seen),
            ("detector", a.get("detector") == f"detectors/{name}"),
            ("prototypes", a.get("prototypes") == f"prototypes/{name}.safetensors"),
            ("tap_layer", isinstance(a.get("tap_layer"), str)),
            ("tau", tau is None or (isinstance(tau, int | float) and not isinstance(tau, bool) and math.isfinite(tau))),
            ("gate", a.get("gate") in ("detector", "all")),
            ("adapter_enabled", isinstance(a.get("adapter_enabled"), bool)),
            ("targets", isinstance(a.get("targets"), list)),
        ]
        for key, ok in checks:
            if not ok:
                raise errors.ModelError(f"{where}: bad {key!r} ({a.get(key)!r})")
        if a["adapter_enabled"] and a["gate"] == "detector" and tau is None:
            raise errors.ModelError(f"{where}: an enabled detector gate needs a 'tau'")
        seen.add(str(name))
    return attrs


def load_progressive_bundle(p: Path, manifest: dict[str, Any], base: Any) -> Any:
    """Load a bundle of several attributes onto ``base`` (already checked against the manifest's sha256)."""
    from peft import PeftModel

    from fairfix.correct.progressive import Attribute, ProgressiveModel
    from fairfix.detect.fit import load_detector
    from fairfix.models.base import load_safetensors
    from fairfix.models.offline import hub_offline

    attrs = check_attributes(manifest)
    needed = [name for a in attrs for name in (f"adapter/{a['adapter']}/adapter_config.json",
                                               f"adapter/{a['adapter']}/adapter_model.safetensors", a["prototypes"])]
    _check_adapter_files(p, manifest, needed, missing="the bundle is incomplete")
    try:
        with hub_offline():  # local folders only
            first = attrs[0]["adapter"]
            peft_model = PeftModel.from_pretrained(base.module, str(p / "adapter" / first), adapter_name=first,
                                                   local_files_only=True)
            for a in attrs[1:]:
                peft_model.load_adapter(str(p / "adapter" / a["adapter"]), adapter_name=a["adapter"],
                                        local_files_only=True)
    except Exception as exc:  # peft raises many types for a bad adapter folder
        raise errors.ModelError(f"{p / 'adapter'}: cannot load the PEFT adapters ({exc})") from exc
    peft_model.eval()
    base.module = peft_model.base_model.model
    loaded = []
    for a in attrs:
        detector = load_detector(p / a["detector"], base)
        protos = load_safetensors(p / a["prototypes"])
        base.check_layer(a["tap_layer"])
        loaded.append(Attribute(a["group"], a["adapter"], detector, a["tap_layer"], a["tau"], a["adapter_enabled"],
                                a["gate"], list(a["targets"]), {k: torch.as_tensor(v) for k, v in protos.items()},
                                {k: a.get(k) for k in ("fitted_on", "correction", "guard", "chosen",
                                                       "base_validation", "sweep")}))
    return ProgressiveModel(base, peft_model, loaded, path=p, digest=manifest.get("digest"), manifest=manifest)
