"""Loading and running each model kind (DESIGN.md section 5).

``load_model`` recognises the kind from the path: a directory with
``fairfix.json`` (a fairfix model), a directory with ``config.json`` (a Hugging
Face sequence classifier), or a safetensors state dict with ``factory``
(``package.module:function``) that builds the torch module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fairfix import errors
from fairfix.models.base import Model, Representation

__all__ = ["Model", "Representation", "load_model"]


def load_model(
    path: str | Path,
    *,
    factory: str | None = None,
    features: Sequence[str] | None = None,
    text_column: str | None = None,
    classes: Sequence[Any] | None = None,
    base: str | Path | None = None,
) -> Model:
    """Load a model of any supported kind (a FairNet bundle loads its base too; ``base`` overrides its path).

    Raises
    ------
    fairfix.errors.ModelError
        The path is not a model fairfix recognises, or its weights do not match.
    """
    from fairfix.artifacts import MANIFEST, read_manifest

    p = Path(path)
    if not p.exists():
        raise errors.ModelError(f"{p}: no such model file or directory")
    if factory is not None:
        from fairfix.models.factory import load_factory_model

        return load_factory_model(p, factory, features=features, classes=classes)
    if p.is_dir() and (p / MANIFEST).is_file():
        manifest = read_manifest(p)
        if manifest["kind"] == "bundle":
            from fairfix.correct.bundle import load_bundle

            return load_bundle(p, manifest, base_path=base)
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
            from fairfix.models.factory import load_factory_model

            return load_factory_model(p, manifest["config"]["factory"], manifest=manifest)
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
