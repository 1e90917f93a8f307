"""Start the command line fast: plain option values without Pydantic, and one BLAS thread for audits.

This module wraps Typer internals (``typer.core.build_runtime_param``, ``typer._coercion``,
``typer._param_types``, ``typer._typing``), so Typer is pinned to the range it was tested with:
``typer>=0.29.2,<0.30`` in pyproject.toml (tested: 0.29.2), and
``tests/cli/test_startup.py`` fails when :func:`install` no longer fits the installed Typer.
Typer's public API has no way around the cost below: every option value (``parser=`` ones too)
goes through a ``TypeAdapter``.  The rest of the start-up work is done through the public API
(``fairfix.cli.build_app`` registers only the command being run).

Typer (0.29) coerces every option value through a Pydantic ``TypeAdapter``.
Importing Pydantic and building those adapters costs ~0.2 s of CPU on every
command, which is most of the 0.5 s budget of auditing a small file
(docs/performance.md).  This module wraps Typer's ``build_runtime_param`` so
that the common cases are coerced directly, exactly as the adapter would:

- ``str`` values for ``str`` options, as they are;
- ``int`` / ``float`` options without bounds, given in plain decimal digits
  (``12``, ``-3``, ``0.95``);
- ``Enum`` choices and unconstrained ``Path`` options, through the same
  Typer helpers the adapters call;
- lists of the above (repeatable options).

Every other value (``1_000``, ``1e-3``, ``" 7"``, an invalid choice, ...) and
every other annotation goes to Typer's own adapter, built on first use, so
results and error messages are Typer's.  If Typer's internals are not what
this module expects, it leaves Typer alone.

Also, numpy's OpenBLAS starts a pool of spinning threads when numpy is imported
(~0.1 s of CPU on a 2-core machine) that ``fairfix audit`` never uses:
:func:`single_blas_thread`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

_INT = re.compile(r"-?[0-9]+\Z")
_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\Z")
_UNHANDLED = object()


def install() -> bool:
    """Wrap Typer's runtime coercion; True when installed (idempotent)."""
    try:
        import typer.core as core
        from typer import _coercion
        from typer._param_types import coerce_cli_choice, coerce_cli_path, lenient_issubclass
        from typer._typing import get_args, get_origin
    except ImportError:
        return False
    original = getattr(core, "build_runtime_param", None)
    base = getattr(_coercion, "RuntimeParam", None)
    if original is None or base is None or getattr(original, "_fairfix_fast", False):
        return bool(original is not None and getattr(original, "_fairfix_fast", False))

    @dataclass(frozen=True)
    class FastRuntimeParam(base):  # type: ignore[misc, valid-type]
        descriptor: Any = None
        _full: list[Any] = field(default_factory=list)  # Typer's param, built on first need

        def _leaf(self, ann: Any, value: Any, param: Any, ctx: Any) -> Any:
            info = self.parameter_info
            if getattr(info, "parser", None) is not None:
                return _UNHANDLED
            bounded = (getattr(info, "min", None) is not None
                       or getattr(info, "max", None) is not None)
            if ann is str:
                return value if isinstance(value, str) else _UNHANDLED
            if ann is int and not bounded:
                if type(value) is int:
                    return value
                if isinstance(value, str) and _INT.match(value):
                    return int(value)
                return _UNHANDLED
            if ann is float and not bounded:
                if type(value) is float:
                    return value
                if isinstance(value, str) and _FLOAT.match(value):
                    return float(value)
                return _UNHANDLED
            try:
                if lenient_issubclass(ann, Enum):
                    return coerce_cli_choice(
                        value, choices=list(ann), case_sensitive=info.case_sensitive, ctx=ctx
                    )
                if ann is Path and info.path_type in (None, Path) and isinstance(value, str | Path):
                    if isinstance(value, str) and not value:
                        return _UNHANDLED
                    return coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
            except Exception:  # noqa: BLE001 - Typer's adapter reports it its own way
                return _UNHANDLED
            return _UNHANDLED

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            ann = self.annotation
            if get_origin(ann) is list:
                args = get_args(ann)
                if len(args) == 1 and isinstance(value, list | tuple):
                    out = [self._leaf(args[0], v, param, ctx) for v in value]
                    if all(o is not _UNHANDLED for o in out):
                        return out
            else:
                out = self._leaf(ann, value, param, ctx)
                if out is not _UNHANDLED:
                    return out
            if not self._full:
                assert original is not None
                self._full.append(original(self.descriptor))
            return self._full[0]._coerce_value(value, param=param, ctx=ctx)

    def build_runtime_param(descriptor: Any) -> Any:
        if getattr(descriptor, "file_annotation", None) is not None:
            return original(descriptor)
        return FastRuntimeParam(
            parameter_info=descriptor.parameter_info,
            annotation=descriptor.annotation,
            descriptor=descriptor,
        )

    build_runtime_param._fairfix_fast = True  # type: ignore[attr-defined]
    core.build_runtime_param = build_runtime_param
    return True


def single_blas_thread(argv: Sequence[str] | None = None) -> None:
    """For ``fairfix audit``, ask OpenBLAS for one thread (unless the user chose a number).

    Counting and bootstrap intervals do no matrix algebra; models run in torch,
    which does not read this variable.  Only effective before numpy is imported.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["audit"] and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
