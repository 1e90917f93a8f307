"""Artifact directories: a ``fairfix.json`` manifest plus weight files (DESIGN.md section 5).

A model, detector or bundle is a directory whose manifest records its kind,
schema version, fairfix version, the sha256 of every file, the config used and
the training data's sha256 and row count.  Directories are written into a
temporary sibling and renamed into place, so a reader sees the old artifact or
the whole new one; an existing output is never replaced without ``force``.
Loading verifies every hash, so a truncated or edited file is refused with a
line that names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fairfix import __version__, errors

MANIFEST = "fairfix.json"
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def data_fingerprint(data: Any) -> dict[str, Any]:
    """``{"source", "sha256"}`` of a training data file (sha256 null for stdin/in-memory data)."""
    if isinstance(data, str | os.PathLike) and os.fspath(data) != "-" and os.path.isfile(data):
        return {"source": os.fspath(data), "sha256": sha256_file(data)}
    return {"source": str(data) if isinstance(data, str | os.PathLike) else "<in-memory>", "sha256": None}


def digest(manifest: dict[str, Any]) -> str:
    """The identity of an artifact: sha256 over its files' hashes (order-independent)."""
    files = manifest.get("files", {})
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return h.hexdigest()


def write_artifact(
    out: str | os.PathLike[str],
    *,
    kind: str,
    schema: str,
    write_files: Callable[[Path], None],
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Create artifact directory ``out``: ``write_files(tmpdir)`` writes the payload, then the manifest.

    Returns the manifest.
    """
    out = Path(out)
    if out.exists() and not force:
        raise errors.OutputExistsError(errors.OUTPUT_EXISTS.format(path=out))
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise errors.UsageError(f"{out}: folder {parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        write_files(tmp)
        files = {
            str(p.relative_to(tmp)): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        manifest = {
            "kind": kind,
            "schema": schema,
            "fairfix_version": __version__,
            "files": files,
            "config": config,
            **(extra or {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        if out.exists():  # force: move the old one aside, then swap
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def read_manifest(path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """Load and (by default) verify an artifact's manifest.

    Raises
    ------
    fairfix.errors.ModelError
        No manifest, unreadable manifest, a listed file missing or with another sha256.
    """
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        raise errors.ModelError(f"{path}: no {MANIFEST} manifest")
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, ValueError) as exc:
        raise errors.ModelError(f"{mf}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or "kind" not in manifest or "files" not in manifest:
        raise errors.ModelError(f"{mf}: not a fairfix manifest (no 'kind'/'files')")
    if verify:
        for name, expected in manifest["files"].items():
            f = path / name
            if not f.is_file():
                raise errors.ModelError(f"{path}: file {name} listed in {MANIFEST} is missing")
            if sha256_file(f) != expected:
                raise errors.ModelError(
                    f"{f}: sha256 differs from {MANIFEST} (corrupt, truncated or edited file)"
                )
    manifest["digest"] = digest(manifest)
    return manifest
