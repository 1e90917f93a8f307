"""Artifact directories: a ``fairfix.json`` manifest plus weight files (DESIGN.md section 5).

A model, detector or bundle is a directory whose manifest records its kind,
schema version, fairfix version, the sha256 of every file, the config used and
the training data's sha256 and row count.  Directories are written into a
temporary sibling and renamed into place, so a reader sees the old artifact or
the whole new one; an existing output is never replaced without ``force``, and
with ``force`` only when it is itself a fairfix artifact.

Loading verifies every hash, so a truncated or edited file is refused with a
line that names it.  Every file in the directory must be listed (pip's
hash-checking mode: an unlisted file is an error), every listed name must stay
inside the directory, and no symlink is followed.  An artifact's identity (its
*digest*) is the sha256 of its whole manifest, so it covers the config that
changes behaviour (classes, preprocessing, tau, ...) as well as every file hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fairfix import __version__, errors

MANIFEST = "fairfix.json"
KINDS = ("model", "detector", "bundle")
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


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
    """The identity of an artifact: sha256 of its manifest (canonical JSON, without ``digest``).

    The manifest holds the sha256 of every file, so the digest changes whenever a
    file changes -- and also when the config that changes behaviour does (classes,
    preprocessing, tau, the base model's reference, ...).
    """
    body = {k: v for k, v in manifest.items() if k != "digest"}
    body = json.loads(json.dumps(body, default=str))  # as it reads back from the file (str keys, lists)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_umask(root: Path) -> None:
    """Give a freshly written tree the permissions of ordinary new files (not mkdtemp's 0700)."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                os.chmod(p, 0o777 & ~mask)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o666 & ~mask)


def _is_artifact_dir(path: Path) -> bool:
    """True for a real directory (not a symlink) holding a fairfix manifest of a known kind."""
    if path.is_symlink() or not path.is_dir():
        return False
    mf = path / MANIFEST
    try:
        if mf.is_symlink() or not mf.is_file():
            return False
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and manifest.get("kind") in KINDS


def bundle_base_path(path: str | os.PathLike[str]) -> str | None:
    """For a directory holding a fairfix bundle: its base model's recorded path ("" when none); else None.

    Reads the manifest only (no hashes checked): a cheap look before loading anything.
    """
    p = Path(path)
    mf = p / MANIFEST
    try:
        if p.is_symlink() or mf.is_symlink() or not mf.is_file():
            return None
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(manifest, dict) or manifest.get("kind") != "bundle":
        return None
    ref = manifest.get("base_model")
    base = ref.get("path") if isinstance(ref, dict) else None
    return base if isinstance(base, str) else ""


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
    except ValueError:
        return False
    return True


def check_replaceable(out: str | os.PathLike[str], force: bool, inputs: Iterable[Any] = ()) -> None:
    """Fail unless artifact directory ``out`` may be written: absent, or (with ``force``) a fairfix artifact.

    ``--force`` replaces only a directory that is itself a fairfix artifact (a
    manifest of a known kind), never the working directory or a folder above it,
    and never a folder that holds one of ``inputs`` (the data or model being read).

    Raises
    ------
    fairfix.errors.OutputExistsError
        ``out`` exists and ``force`` is false.
    fairfix.errors.UsageError
        ``out`` exists but is not something ``--force`` may replace.
    """
    from fairfix.report.io import check_folder

    p = Path(out)
    if not (p.exists() or p.is_symlink()):
        check_folder(p)
        return
    if not force:
        raise errors.OutputExistsError(errors.OUTPUT_EXISTS.format(path=p))
    real = Path(os.path.realpath(p))
    if _inside(Path(os.getcwd()).resolve(), real):
        raise errors.UsageError(f"{p}: is the working directory or a folder above it; --force will not replace it")
    for item in inputs:
        if item is None or not isinstance(item, str | os.PathLike) or os.fspath(item) == "-":
            continue
        if os.path.exists(item) and _inside(Path(os.path.realpath(item)), real):
            raise errors.UsageError(f"{p}: holds the input {os.fspath(item)}; --force will not replace an input")
    if not _is_artifact_dir(p):
        what = "a symlink" if p.is_symlink() else ("not a directory" if not p.is_dir() else
                                                  f"not a fairfix artifact (no valid {MANIFEST})")
        raise errors.UsageError(f"{p}: exists and is {what}; --force replaces only fairfix artifact directories")
    check_folder(p)


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
    check_replaceable(out, force)
    shown = Path(out)  # errors name the path as the user gave it
    out = Path(os.path.abspath(out))
    parent = out.parent
    if not parent.is_dir():
        raise errors.UsageError(f"{out}: folder {parent} does not exist")
    from fairfix.report.io import write_error

    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise errors.UsageError(errors.OUTPUT_UNWRITABLE.format(path=shown, reason=exc.strerror or exc)) from exc
    try:
        write_files(tmp)
        files = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p != tmp / MANIFEST
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
        _apply_umask(tmp)
        if out.exists():  # force: move the old one aside, then swap
            check_replaceable(out, force)  # it may have changed while we were writing
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            try:
                os.replace(out, old / out.name)
                os.replace(tmp, out)
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        failed = write_error(shown, exc)  # disk full, read-only: exit 2 naming the path, not exit 3
        if failed is not None:
            raise failed from exc
        raise
    return manifest


def member(root: str | os.PathLike[str], name: Any, manifest_name: str = MANIFEST) -> Path:
    """The file ``name`` of artifact ``root``: a relative path inside it, through no symlink.

    Raises
    ------
    fairfix.errors.ModelError
        An absolute name, ``..``, a symlink on the way, or not a regular file.
    """
    root = Path(root)
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise errors.ModelError(f"{root / manifest_name}: bad file name {name!r} in 'files'")
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise errors.ModelError(
            f"{root / manifest_name}: file name {name!r} in 'files' leaves the artifact directory"
        )
    p = root
    for i, part in enumerate(parts):
        p = p / part
        try:
            st = os.lstat(p)
        except OSError:
            raise errors.ModelError(f"{root}: file {name} listed in {manifest_name} is missing") from None
        if stat.S_ISLNK(st.st_mode):
            raise errors.ModelError(f"{p}: is a symlink; fairfix follows no symlink inside an artifact")
        last = i == len(parts) - 1
        if last and not stat.S_ISREG(st.st_mode):
            raise errors.ModelError(f"{p}: listed in {manifest_name} but not a regular file")
        if not last and not stat.S_ISDIR(st.st_mode):
            raise errors.ModelError(f"{root}: file {name} listed in {manifest_name} is missing")
    return p


def _check_shape(mf: Path, manifest: Any) -> None:
    """One line naming the manifest when it is not a manifest fairfix wrote."""
    if not isinstance(manifest, dict) or "kind" not in manifest or "files" not in manifest:
        raise errors.ModelError(f"{mf}: not a fairfix manifest (no 'kind'/'files')")
    if manifest["kind"] not in KINDS:
        raise errors.ModelError(f"{mf}: unknown kind {manifest['kind']!r}; expected one of {', '.join(KINDS)}")
    files = manifest["files"]
    if not isinstance(files, dict):
        raise errors.ModelError(f"{mf}: 'files' must map file names to sha256, not {type(files).__name__}")
    for name, value in files.items():
        if not isinstance(value, str) or not _SHA256.match(value):
            raise errors.ModelError(f"{mf}: 'files' entry {name!r} is not a sha256 ({value!r})")
    if "config" in manifest and not isinstance(manifest["config"], dict):
        raise errors.ModelError(f"{mf}: 'config' must be a mapping")


def read_manifest(path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """Load and (by default) verify an artifact's manifest.

    Verification checks the sha256 of every listed file, that every listed
    name stays inside the directory (no ``..``, no absolute path, no symlink),
    and that the directory holds no file the manifest does not list.

    Raises
    ------
    fairfix.errors.ModelError
        No manifest, unreadable manifest, a listed file missing or with another
        sha256, a name outside the directory, a symlink, or an unlisted file.
    """
    path = Path(path)
    mf = path / MANIFEST
    if mf.is_symlink():
        raise errors.ModelError(f"{mf}: is a symlink; fairfix follows no symlink inside an artifact")
    if not mf.is_file():
        raise errors.ModelError(f"{path}: no {MANIFEST} manifest")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise errors.ModelError(f"{mf}: unreadable manifest ({reason})") from exc
    _check_shape(mf, manifest)
    if verify:
        files = manifest["files"]
        for name, expected in files.items():
            f = member(path, name)
            if sha256_file(f) != expected:
                raise errors.ModelError(
                    f"{f}: sha256 differs from {MANIFEST} (corrupt, truncated or edited file)"
                )
        for dirpath, dirnames, filenames in os.walk(path):
            for entry in [*dirnames, *filenames]:
                full = Path(dirpath) / entry
                rel = full.relative_to(path).as_posix()
                if full.is_symlink():
                    raise errors.ModelError(f"{full}: is a symlink; fairfix follows no symlink inside an artifact")
                if entry in filenames and rel != MANIFEST and rel not in files:
                    raise errors.ModelError(
                        f"{full}: not listed in {mf}; an artifact holds only the files its manifest hashes"
                    )
    manifest["digest"] = digest(manifest)
    return manifest
