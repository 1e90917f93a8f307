"""Loading and running each model kind (DESIGN.md section 5).

``load_model`` recognises the kind from the path: a directory with
``fairfix.json`` (a fairfix model), a directory with ``config.json`` (a Hugging
Face sequence classifier), or a safetensors state dict with ``factory``
(``package.module:function``) that builds the torch module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairfix import errors
from fairfix.models.base import Model, Representation

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Model", "Representation", "load_model"]


def load_model(
    path: str | Path,
    *,
    factory: str | nn.Module | None = None,
    features: Sequence[str] | None = None,
    text_column: str | None = None,
    classes: Sequence[Any] | None = None,
    base: str | Path | None = None,
) -> Model:
    """Load a model of any supported kind (a FairNet bundle loads its base too; ``base`` overrides its path).

    ``factory`` is ``package.module:function`` or, from Python, an ``nn.Module`` whose copy
    takes the weights (a bundle's base model too).

    Raises
    ------
    fairfix.errors.ModelError
        The path is not a model fairfix recognises, or its weights do not match.
    """
    from fairfix.artifacts import MANIFEST, read_manifest

    p = Path(path)
    if not p.exists():
        raise errors.ModelError(f"{p}: no such model file or directory")
    if p.is_dir() and (p / MANIFEST).is_file() and factory is not None:
        manifest = read_manifest(p)
        if manifest["kind"] == "bundle":  # --factory names the code of the bundle's base model
            from fairfix.models.factory import factory_name, trusted_factories

            with trusted_factories(factory_name(factory)):
                return _load_bundle(p, manifest, base, factory if not isinstance(factory, str) else None)
    if factory is not None:
        from fairfix.models.factory import load_factory_model

        return load_factory_model(p, factory, features=features, classes=classes)
    if p.is_dir() and (p / MANIFEST).is_file():
        manifest = read_manifest(p)
        if manifest["kind"] == "bundle":
            return _load_bundle(p, manifest, base)
        if manifest["kind"] != "model":
            raise errors.ModelError(f"{p}: is a fairfix {manifest['kind']}, not a model")
        mk = manifest.get("model_kind")
        if mk == "tabular_mlp":
            from fairfix.models.tabular import load_tabular

            return load_tabular(p, manifest)
        if mk == "hf_sequence_classification":
            from fairfix.models.hf import load_hf_model

            return load_hf_model(p, manifest=manifest)
        if mk == "factory":
            from fairfix.models.factory import check_recorded_factory, load_factory_model

            recorded = check_recorded_factory(p, (manifest.get("config") or {}).get("factory"))
            return load_factory_model(p, recorded, manifest=manifest)
        raise errors.ModelError(f"{p}: unknown model kind {mk!r} in {MANIFEST}")
    if p.is_dir() and (p / "config.json").is_file():
        from fairfix.models.hf import load_hf_model

        return load_hf_model(p, text_column=text_column)
    if p.is_file() and p.suffix == ".safetensors":
        raise errors.ModelError(f"{p}: a bare state dict needs --factory package.module:function")
    raise errors.ModelError(
        f"{p}: not a model fairfix recognises (expected a directory with {MANIFEST} or a Hugging Face "
        "config.json, or a .safetensors file with --factory)"
    )


def _load_bundle(p: Path, manifest: dict[str, Any], base: str | Path | None, module: Any = None) -> Model:
    """Check the bundle manifest's fields, load it, and check its tap layer against the base."""
    import math

    from fairfix.artifacts import MANIFEST
    from fairfix.correct.bundle import load_bundle

    mf = p / MANIFEST
    ref = manifest.get("base_model")
    tau = manifest.get("tau")
    checks: list[tuple[str, bool]] = [
        ("base_model", isinstance(ref, dict)
         and all(isinstance(ref.get(k), str | type(None)) for k in ("path", "sha256"))),
        ("tap_layer", isinstance(manifest.get("tap_layer"), str)),
        ("tau", tau is None or (isinstance(tau, int | float) and not isinstance(tau, bool) and math.isfinite(tau))),
        ("adapter_enabled", isinstance(manifest.get("adapter_enabled", False), bool)),
        ("targets", isinstance(manifest.get("targets", []), list)),
        ("gate", manifest.get("gate", "detector") in ("detector", "all")),
    ]
    for key, ok in checks:
        if not ok:
            raise errors.ModelError(f"{mf}: bad {key!r} ({manifest.get(key)!r})")
    model = load_bundle(p, manifest, _bundle_base(p, manifest["base_model"], base, module))
    inner = getattr(model, "base", None)
    if inner is not None:
        try:
            inner.check_layer(manifest["tap_layer"])
        except errors.ModelError as exc:
            raise errors.ModelError(f"{mf}: tap_layer {manifest['tap_layer']!r}: {exc}") from None
    return model


def _bundle_base(p: Path, ref: dict[str, Any], base_path: str | Path | None, module: Any = None) -> Model:
    """Load the bundle's base model and check its sha256 against the manifest's.

    The base is ``base_path`` or the manifest's path: ``base/`` inside the bundle itself when the
    manifest says ``"embedded": true`` (a bundle made from a model in memory holds it,
    :data:`fairfix.correct.bundle.EMBEDDED_BASE`), else a
    relative path not found as given is relative to the bundle's folder.  ``module``: the
    ``nn.Module`` a factory base is built on (the Python API's ``factory=``).
    """
    from fairfix.correct.bundle import EMBEDDED_BASE

    bp = Path(base_path) if base_path is not None else (Path(ref["path"]) if ref.get("path") else None)
    if bp is None:
        raise errors.ModelError(f"{p}: the bundle does not say where its base model is; pass --base PATH")
    if base_path is None and ref.get("embedded") is True:
        bp = p / EMBEDDED_BASE
    elif not bp.is_absolute() and not bp.exists() and (p.parent / bp).exists():
        bp = p.parent / bp
    from fairfix.artifacts import bundle_base_path

    if bundle_base_path(bp) is not None:  # a bundle over a bundle (or over itself) would recurse without end
        raise errors.ModelError(
            f"{p}: its base model {bp} is itself a FairNet bundle; a bundle's base must be a model "
            "(was the base overwritten by `correct --out BASE --force`?)"
        )
    base = load_model(bp, factory=module)
    if ref.get("sha256") and base.digest != ref["sha256"]:
        raise errors.ModelError(
            f"{p}: base model {bp} has sha256 {str(base.digest)[:12]}..., the bundle was made for "
            f"{ref['sha256'][:12]}...; refusing a different base"
        )
    return base
