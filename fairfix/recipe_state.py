"""The run directory's state for ``fairfix run``: ``steps.json`` and the keys it records.

Each step writes its outputs into the run directory and records a key -- the sha256
of its config and of its inputs (data files, upstream artifacts) -- in ``steps.json``;
a rerun skips every finished step whose key is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from fairfix import errors


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _data_hash(value: str) -> str:
    from fairfix.artifacts import sha256_file
    from fairfix.data.frames import embedded_file

    f = embedded_file(value) or value
    return sha256_file(f) if os.path.isfile(f) else value


class StepLog:
    """``steps.json`` in the run directory: what ran, with which key, when."""

    def __init__(self, out: Path):
        self.path = out / "steps.json"
        self.steps: dict[str, Any] = {}
        if self.path.is_file():
            try:
                self.steps = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as exc:
                raise errors.UsageError(f"{self.path}: unreadable ({' '.join(str(exc).split())[:200]}); "
                                        "remove it to rerun every step") from None
            if not isinstance(self.steps, dict) or not all(isinstance(v, dict) for v in self.steps.values()):
                raise errors.UsageError(f"{self.path}: not a steps.json that fairfix run wrote")

    def done(self, step: str, key: str, outputs: list[Path]) -> bool:
        """True when ``step`` finished with these inputs (``key``) and its outputs are still there."""
        rec = self.steps.get(step)
        return bool(rec and rec["key"] == key and all(o.exists() for o in outputs))

    def check_owned(self, step: str, outputs: list[Path]) -> None:
        """Refuse to replace an output that exists but that this run did not write (per ``steps.json``).

        ``fairfix run`` replaces its own outputs when a step reruns; anything else under
        the run directory (a folder the user made, a file from another tool) is left alone.
        """
        rec = self.steps.get(step)
        written = set(rec.get("outputs") or []) if isinstance(rec, dict) else set()
        for o in outputs:
            if not (o.exists() or o.is_symlink()):
                continue
            if not isinstance(rec, dict) or (written and o.name not in written):
                raise errors.UsageError(
                    f"{o}: exists but was not written by this run (no {step!r} step in {self.path}); "
                    "move it away or choose another --out"
                )
            if o.is_symlink() or (o.is_dir() and not (o / "fairfix.json").is_file()):
                raise errors.UsageError(f"{o}: is not a fairfix artifact; fairfix run will not replace it")

    def record(self, step: str, key: str, seconds: float, outputs: list[Path] | None = None) -> None:
        """Write ``step`` as finished (its key, time and outputs) to ``steps.json``, atomically."""
        from fairfix.report.io import write_atomic

        self.steps[step] = {"key": key, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(seconds, 3),
                            "outputs": [o.name for o in outputs or []]}
        write_atomic(self.path, json.dumps(self.steps, indent=2) + "\n", force=True)
