"""Atomic file output: write a temporary sibling, then rename it into place."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fairfix import errors


def check_writable(path: str | os.PathLike[str], force: bool = False) -> Path:
    """Fail early (before any work) when ``path`` exists without ``force`` or its folder is missing."""
    p = Path(path)
    if p.exists() and not force:
        raise errors.OutputExistsError(errors.OUTPUT_EXISTS.format(path=p))
    if p.is_dir():
        raise errors.UsageError(f"{p}: is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise errors.UsageError(f"{p}: folder {parent} does not exist")
    return p


def write_atomic(path: str | os.PathLike[str], data: str | bytes, force: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never half.

    Raises
    ------
    fairfix.errors.OutputExistsError
        ``path`` exists and ``force`` is false.
    """
    p = check_writable(path, force)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if not force and p.exists():  # appeared while we were writing
            raise errors.OutputExistsError(errors.OUTPUT_EXISTS.format(path=p))
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
