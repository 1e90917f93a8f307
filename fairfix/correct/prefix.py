"""The frozen prefix of an encoder, computed once for every fold and step (DESIGN.md section 1, step 6).

LoRA sits on the later layers of a transformer (the layers after the detector's tap), so the
encoder layers below the first adapted one give the same hidden states at every step of every
fold.  :func:`prefix_cache` runs them once over every row; inside :meth:`PrefixCache.rows` the
layers below the first adapted one return those states (the ones under it pass their input
through untouched) instead of computing them.  Hooks on those layers still run, on the cached
states.  Only for models with a list of encoder layers (Hugging Face transformers) whose
adapted layers all lie in that list above its first layer, and only when the states fit in
``MAX_BYTES``; otherwise None (every step runs the whole model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

#: The most memory the cached hidden states may take.
MAX_BYTES = 2 * 1024**3


class PrefixCache:
    """Hidden states entering encoder layer ``k`` for every row of one encoded table."""

    def __init__(self, layers: nn.ModuleList, k: int, hidden: torch.Tensor, wrap: Callable[[torch.Tensor], Any]):
        self.layers, self.k, self.hidden, self.wrap = layers, k, hidden, wrap

    @contextmanager
    def rows(self, ids: torch.Tensor) -> Iterator[None]:
        """Within the block, layers ``0 .. k-1`` give the cached states of rows ``ids`` (positions in the table)."""
        states = self.hidden[ids]  # (B, T, H)

        def through(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            return self.wrap(hidden_states)

        def cached(*args: Any, **kwargs: Any) -> Any:
            return self.wrap(states)

        patched = list(self.layers)[: self.k]
        try:
            for layer in patched[:-1]:
                layer.forward = through  # type: ignore[method-assign]
            patched[-1].forward = cached  # type: ignore[method-assign]
            yield
        finally:
            for layer in patched:
                layer.__dict__.pop("forward", None)  # back to the class's forward


def prefix_cache(work: Any, inputs: dict[str, torch.Tensor], targets: list[str], batch: int) -> PrefixCache | None:
    """Run the frozen layers below the first adapted one once over every row (None where that cannot help)."""
    try:
        from fairfix.models.hf import encoder_layers

        name, n = encoder_layers(work.module)
    except Exception:  # noqa: BLE001 -- not a transformer: no list of encoder layers
        return None
    prefix = name + "."
    if not targets or not all(t.startswith(prefix) for t in targets):
        return None
    k = min(int(t[len(prefix):].split(".", 1)[0]) for t in targets)
    if k < 1:
        return None
    layers: nn.ModuleList = work.module.get_submodule(name)
    shape: dict[str, Any] = {}
    states = []

    def hook(_mod: nn.Module, _args: Any, out: Any) -> None:
        shape["out"] = out
        states.append((out[0] if isinstance(out, tuple) else out).detach())

    n_rows = len(next(iter(inputs.values())))
    handle = layers[k - 1].register_forward_hook(hook)
    try:
        with torch.no_grad():
            for s in range(0, n_rows, batch):
                work.forward({key: v[s:s + batch] for key, v in inputs.items()})
                if s == 0 and states[0].numel() * 4 * n_rows // max(len(states[0]), 1) > MAX_BYTES:
                    return None
    finally:
        handle.remove()
    out = shape["out"]
    if isinstance(out, tuple):
        if any(x is not None for x in out[1:]):  # attentions or caches: not a plain hidden-state layer
            return None
        size = len(out)

        def wrap(h: torch.Tensor) -> Any:
            return (h, *([None] * (size - 1)))
    else:
        def wrap(h: torch.Tensor) -> Any:
            return h
    return PrefixCache(layers, k, torch.cat(states), wrap)
