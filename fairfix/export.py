"""``fairfix export``: a bundle whose adapter is on for every row, merged into a plain model directory.

When the guard chose gate ``all`` (the adapter on for every row), the correction is a
fine-tuned model: peft's ``merge_and_unload`` folds each LoRA update into its layer's
weights (``W + scaling * B A``) and the result is written as a model directory of the
base's kind (``fairfix.model/1``, as ``fairfix train`` writes them):

- a Hugging Face base: ``config.json``, ``model.safetensors`` and the tokenizer files, which
  ``transformers.AutoModelForSequenceClassification.from_pretrained(DIR)`` loads;
- a tabular MLP: ``model.safetensors`` and its preprocessing in ``fairfix.json``;
- a factory model: ``model.safetensors`` and the factory's name in ``fairfix.json``.

Each also holds a ``README.md`` model card (what was merged, the guard's evidence, the
hashes of the source bundle, and the fairness section of ``fairfix report --model-card``)
and records the same provenance in its manifest under ``merged_from``; every file is
hashed, so ``fairfix predict --model DIR`` loads it with the usual checks.  It runs at the
base model's cost: no detector, no gate, no LoRA layer.

A detector-gated bundle (the adapter on for some rows only), a bundle whose adapter the
guard turned off, and a bundle of several attributes cannot be merged: their outputs are
not those of one set of weights.  They deploy as MLflow models (``fairfix.mlflow``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fairfix import errors

MLFLOW_HINT = ("deploy the bundle itself as an MLflow model instead (fairfix correct --mlflow, "
               "or fairfix.mlflow.log_model(BUNDLE))")


def check_mergeable(bundle: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """UsageError (one line, pointing to the MLflow model) unless the bundle's adapter is on for every row."""
    where = os.fspath(bundle)
    if "attributes" in manifest:
        gates = ", ".join(f"{a.get('group')}: gate {a.get('gate')}" for a in manifest["attributes"])
        raise errors.UsageError(f"{where}: a bundle of several attributes ({gates}) is gated per attribute and "
                                f"cannot be merged into one model; {MLFLOW_HINT}")
    if not manifest.get("adapter_enabled"):
        raise errors.UsageError(f"{where}: the guard shipped the adapter off (the bundle's outputs are its base "
                                f"model's), so there is nothing to merge; deploy the base model, or {MLFLOW_HINT}")
    if manifest.get("gate", "detector") != "all":
        raise errors.UsageError(f"{where}: the adapter is switched on row by row by the bias detector (gate "
                                f"detector, tau {manifest.get('tau')}); merged weights would correct every row, "
                                f"so it cannot be merged: {MLFLOW_HINT}")


def export_bundle(bundle: str | os.PathLike[str], out: str | os.PathLike[str], *, base: str | Path | None = None,
                  factory: str | None = None, force: bool = False) -> dict[str, Any]:
    """Merge a gate-``all`` bundle's LoRA into its base's weights and write the model directory ``out``.

    Returns the written manifest.

    Raises
    ------
    fairfix.errors.UsageError
        The bundle cannot be merged (detector-gated, adapter off, several attributes), or
        ``out`` is, holds, or lies inside the bundle or its base (nothing is lost).
    fairfix.errors.ModelError
        The bundle or its base does not load with fairfix's checks.
    """
    from fairfix.artifacts import MANIFEST, read_manifest
    from fairfix.models import load_model

    src = Path(bundle)
    if not (src / MANIFEST).is_file():
        raise errors.UsageError(f"{src}: not a FairNet bundle (no {MANIFEST}; `fairfix correct --out` writes one)")
    manifest = read_manifest(src)
    if manifest["kind"] != "bundle":
        raise errors.UsageError(f"{src}: is a fairfix {manifest['kind']}, not a bundle; only a bundle is exported")
    check_mergeable(src, manifest)
    recorded = (manifest.get("base_model") or {}).get("path")
    check_out(out, force, [src, base if base is not None else recorded])  # before any weights are read
    model = load_model(src, base=base, factory=factory)
    inner = model.base  # type: ignore[attr-defined]
    check_out(out, force, [src, inner.path])
    inner.module = model.peft_model.merge_and_unload().eval()  # type: ignore[attr-defined]
    export = {"card": _card(src, manifest, inner, Path(out).name), "merged_from": provenance(src, manifest, inner)}
    base_manifest = inner.manifest or {}
    config = dict(base_manifest.get("config") or {})
    training = dict(base_manifest.get("training") or {})
    if inner.kind == "tabular_mlp":  # its directory records the architecture from the config
        arch = base_manifest.get("architecture") or {}
        config.setdefault("hidden", arch.get("hidden"))
        config.setdefault("dropout", arch.get("dropout", 0.0))
    written: dict[str, Any] = inner.save(out, config=config, training=training, force=force, export=export)
    return written


def check_out(out: str | os.PathLike[str], force: bool, inputs: list[Any]) -> None:
    """``out`` may be written: as every command's ``--out``, and never inside an input artifact either."""
    from fairfix.artifacts import check_replaceable

    real = Path(os.path.realpath(out))
    for item in inputs:
        if item is None:
            continue
        src = Path(os.path.realpath(item))
        if src.is_dir() and real != src and src in real.parents:
            raise errors.UsageError(f"{out}: lies inside the input {os.fspath(item)}; writing there would add an "
                                    "unlisted file to it (it would no longer load); choose another --out")
    check_replaceable(out, force, inputs)


def provenance(src: Path, manifest: dict[str, Any], base: Any) -> dict[str, Any]:
    """What the export was merged from: the bundle's identity and files, the base's, the chosen setting."""
    adapter = {k: v for k, v in (manifest.get("files") or {}).items() if k.startswith("adapter/")}
    chosen = manifest.get("chosen") or {}
    cfg = manifest.get("config") or {}
    return {"bundle": str(src), "bundle_sha256": manifest.get("digest"), "adapter_files": adapter,
            "base_model": {"path": str(base.path) if base.path else None, "sha256": base.digest, "kind": base.kind},
            "targets": manifest.get("targets"), "rank": cfg.get("rank"), "alpha": cfg.get("alpha"),
            "strength": chosen.get("strength"), "steps": chosen.get("steps"), "gate": manifest.get("gate")}


def _card(src: Path, manifest: dict[str, Any], base: Any, name: str) -> str:
    """README.md: the merged-export section, then the fairness section of the bundle's comparison."""
    import json

    from fairfix.report.model_card import update_card
    from fairfix.report.render import md_code

    prov = provenance(src, manifest, base)
    ch = manifest.get("chosen") or {}
    bv = manifest.get("base_validation") or {}
    ev = (manifest.get("config") or {}).get("folds")
    lines = ["## Merged export", "",
             f"This model is the FairNet bundle {md_code(src.name)} with its LoRA adapter merged into the base "
             f"model's weights (peft `merge_and_unload`: each adapted layer holds `W + scaling * B A`). The guard "
             "chose to switch the adapter on for every row (gate `all`), so the merged weights give the bundle's "
             "outputs on every row (to float rounding) at the base model's cost: no detector, no gate.", "",
             "| | |", "|---|---|",
             f"| adapted layers | {', '.join(md_code(t) for t in prov['targets'] or [])} |",
             f"| LoRA rank, alpha, strength | {prov['rank']}, {prov['alpha']}, {prov['strength']} |",
             f"| optimizer steps | {prov['steps']} |",
             f"| guard's evidence | accuracy {_f(ch.get('accuracy'))} (base {_f(bv.get('accuracy'))}), worst-group "
             f"accuracy {_f(ch.get('worst_group_accuracy'))} (base {_f(bv.get('worst_group_accuracy'))})"
             + (f", held-out by {ev}-fold cross-fitting" if ev and not (manifest.get("config") or {}).get(
                 "val_fraction") else "") + " |",
             f"| source bundle sha256 | {md_code(prov['bundle_sha256'])} |",
             *[f"| {md_code(k)} sha256 | {md_code(v)} |" for k, v in prov["adapter_files"].items()],
             f"| base model ({md_code(base.kind)}) sha256 | {md_code(base.digest)} |", ""]
    section = "\n".join(lines) + "\n"
    try:
        doc = json.loads((src / "compare.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"# {name}\n\n{section}"
    text, _ = update_card(None, doc, model_name=name)
    return text.replace(f"# {name}\n\n", f"# {name}\n\n{section}\n", 1)


def _f(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, int | float) and not isinstance(x, bool) else "-"
