"""Exception -> message and exit code, for every command (DESIGN.md section 3).

0 success; 1 a --fail-on gate tripped; 2 bad usage, data, recipe or model (one
line on stderr); 3 anything unexpected.  Tracebacks only with FAIRFIX_DEBUG=1.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from fairfix import errors
from fairfix.cli import _output

F = TypeVar("F", bound=Callable[..., Any])
EXIT_GATE, EXIT_BAD_INPUT, EXIT_UNEXPECTED = 1, 2, 3


def debug() -> bool:
    """True when FAIRFIX_DEBUG asks for tracebacks."""
    return os.environ.get("FAIRFIX_DEBUG", "") not in ("", "0")


def handle_errors(fn: F) -> F:
    """Run a command, mapping fairfix's errors to exit 2 and anything else to exit 3."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except errors.FairfixError as exc:
            if debug():
                traceback.print_exc()
            _output.error(" ".join(str(exc).split()))
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            _output.error("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # `fairfix audit ... | head`: the reader went away; not an error of ours.
            os._exit(0)
        except Exception as exc:  # noqa: BLE001 - the contract's exit 3
            hint = ""
            if debug():
                traceback.print_exc()
            else:
                hint = " (set FAIRFIX_DEBUG=1 for the traceback)"
            _output.error(f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())}{hint}")
            raise typer.Exit(EXIT_UNEXPECTED) from None

    return wrapper  # type: ignore[return-value]
