"""Atomic file output: write a temporary sibling, then rename it into place."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fairfix import errors


def same_file(a: str | os.PathLike[str], b: Any) -> bool:
    """True when ``b`` (a path; anything else is ignored) names the file ``a`` names."""
    if not isinstance(b, str | os.PathLike) or os.fspath(b) == "-" or not os.path.exists(b):
        return False
    try:
        return os.path.exists(a) and os.path.samefile(a, b) or os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


def check_writable(path: str | os.PathLike[str], force: bool = False, inputs: Iterable[Any] = ()) -> Path:
    """Fail early (before any work) when ``path`` may not be written.

    ``path`` must not be one of ``inputs`` (the data being read), may exist only
    with ``force``, and then only as a regular file: ``--force`` never replaces a
    device, a pipe, a symlink or a directory.
    """
    p = Path(path)
    if p.is_dir():
        raise errors.UsageError(f"{p}: is a directory")
    for item in inputs:
        if same_file(p, item):
            raise errors.UsageError(f"{p}: is the input {os.fspath(item)}; write the result to another file")
    if p.exists() or p.is_symlink():
        if not force:
            raise errors.OutputExistsError(errors.OUTPUT_EXISTS.format(path=p))
        if not stat.S_ISREG(os.lstat(p).st_mode):
            kind = "a symlink" if p.is_symlink() else "not a regular file"
            raise errors.UsageError(f"{p}: is {kind}; --force replaces only regular files")
    check_folder(p)
    return p


def check_folder(path: str | os.PathLike[str]) -> None:
    """Fail before any work when the folder that will hold ``path`` is missing or cannot be written.

    One rule for every command: the folder must exist (fairfix creates no folders on
    the way to an output), and a file must be creatable in it (a read-only folder or
    file system is exit 2 now, not after the work).
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise errors.UsageError(f"{p}: folder {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise errors.UsageError(errors.OUTPUT_UNWRITABLE.format(path=p, reason=exc.strerror or exc)) from exc


def write_error(path: str | os.PathLike[str], exc: BaseException) -> errors.UsageError | None:
    """The exit-2 error for a failed write of ``path`` (disk full, read-only, ...), or None if ``exc`` is another.

    OSError (from Python, pyarrow) and safetensors' SafetensorError (it wraps the I/O error) count.
    """
    if isinstance(exc, OSError):
        reason: Any = exc.strerror or exc
    elif type(exc).__name__ == "SafetensorError":
        reason = " ".join(str(exc).split())
    else:
        return None
    return errors.UsageError(errors.OUTPUT_UNWRITABLE.format(path=path, reason=reason))


def write_atomic(path: str | os.PathLike[str], data: str | bytes, force: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never half.

    The file gets the permissions of the file it replaces, else those of a new file
    (0o666 less the umask), not mkstemp's private 0o600.

    Raises
    ------
    fairfix.errors.OutputExistsError
        ``path`` exists and ``force`` is false.
    fairfix.errors.UsageError
        The file cannot be written (permissions, disk full, ...).
    """
    p = check_writable(path, force)
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        perms = stat.S_IMODE(p.stat().st_mode) if p.exists() else 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as exc:
        raise errors.UsageError(
            errors.OUTPUT_UNWRITABLE.format(path=p, reason=exc.strerror or exc)
        ) from exc
    try:
        with os.fdopen(fd, mode, encoding=None if isinstance(data, bytes) else "utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, perms)
        if not force and p.exists():  # appeared while we were writing
            raise errors.OutputExistsError(errors.OUTPUT_EXISTS.format(path=p))
        os.replace(tmp, p)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise errors.UsageError(
            errors.OUTPUT_UNWRITABLE.format(path=p, reason=exc.strerror or exc)
        ) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (reading it means setting it; set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
