"""No network: every Hugging Face client fairfix calls runs offline (DESIGN.md section 5).

fairfix reads models and adapters from local directories only.  The hub
clients (``transformers``, ``peft``, ``huggingface_hub``) fall back to the
network when a local file is missing -- peft's adapter loader asks the hub
whether a repository of that name exists -- so every call into them runs
inside :func:`hub_offline`, which sets ``HF_HUB_OFFLINE`` for the libraries
that read it at import and the ``huggingface_hub`` constant that peft reads
at call time.  Callers also pass ``local_files_only=True``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


@contextmanager
def hub_offline() -> Iterator[None]:
    """Inside the block, Hugging Face clients do not reach the network (restored afterwards)."""
    saved_env = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(_ENV)
    hub_constants: Any  # the module, or None without huggingface_hub
    try:
        import huggingface_hub.constants as _hub_constants

        hub_constants = _hub_constants
    except ImportError:  # pragma: no cover - huggingface_hub comes with peft
        hub_constants = None
    saved_const = getattr(hub_constants, "HF_HUB_OFFLINE", None)
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = saved_const
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
