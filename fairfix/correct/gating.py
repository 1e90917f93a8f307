"""One-pass conditional inference (DESIGN.md section 1, step 4).

One forward pass of the adapted model: a forward hook on the tap layer runs
the bias detector on the tap's output and fills a per-row gate; forward
pre-hooks on every peft LoRA layer (all of which sit after the tap) hand that
gate to peft as ``adapter_names`` (``"fairnet"`` or ``"__base__"`` per row), so
peft's ``_mixed_batch_forward`` adds the LoRA update to flagged rows only.  Rows
that are not flagged go through exactly the base layers: their outputs are
bit-identical to the base model's.  All hooks live in a context manager and are
removed in ``finally``; nothing is left on the modules between calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

ADAPTER = "default"  # peft's default name: saved at the top of the adapter folder, as PEFT tools expect
BASE = "__base__"


def lora_layers(module: nn.Module) -> list[nn.Module]:
    """peft LoRA layers inside ``module``."""
    from peft.tuners.lora import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer)]


@dataclass
class Gate:
    """Per-call gating state; lives only inside :func:`gated`."""

    mode: str  # "detector", "on" or "off"
    detector: Any = None
    tau: float = 0.5
    mask: torch.Tensor | None = None
    risk: torch.Tensor | None = None
    flagged: torch.Tensor | None = None
    names: list[str] = field(default_factory=list)


@contextmanager
def gated(model: Any, gate: Gate, tap_layer: str) -> Iterator[Gate]:
    """Route each row through the adapter or the base for forward passes inside the block.

    ``gate.mode``: ``"detector"`` (risk > tau turns the adapter on), ``"on"`` (every
    row) or ``"off"`` (no row).  After the pass, ``gate.risk`` and ``gate.flagged``
    hold the per-row decision.
    """
    handles = []

    def decide(batch: int, tap_out: torch.Tensor | None) -> None:
        if gate.mode == "detector":
            assert tap_out is not None
            gate.risk = gate.detector.risk(tap_out, gate.mask)  # (B,)
            gate.flagged = gate.risk > gate.tau
        else:
            gate.flagged = torch.full((batch,), gate.mode == "on", dtype=torch.bool)
            gate.risk = None
        gate.names = [ADAPTER if f else BASE for f in gate.flagged.tolist()]

    def tap_hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
        h = out[0] if isinstance(out, tuple) else out
        decide(h.shape[0], h)

    def lora_pre_hook(_mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if not gate.names:  # the tap comes after this layer: cannot happen with default targets
            raise RuntimeError("a LoRA layer ran before the tap layer decided the gate")
        kwargs["adapter_names"] = gate.names
        return args, kwargs

    try:
        if gate.mode == "detector":
            handles.append(model.check_layer(tap_layer).register_forward_hook(tap_hook))
        else:
            handles.append(model.check_layer(tap_layer).register_forward_hook(
                lambda _m, _i, out: decide((out[0] if isinstance(out, tuple) else out).shape[0], None)))
        for layer in lora_layers(model.module):
            handles.append(layer.register_forward_pre_hook(lora_pre_hook, with_kwargs=True))
        yield gate
    finally:
        for h in handles:
            h.remove()
        gate.names = []
        gate.mask = None


@torch.no_grad()
def gated_forward(model: Any, inputs: dict[str, torch.Tensor], *, tap_layer: str, mode: str,
                  detector: Any = None, tau: float = 0.5) -> tuple[torch.Tensor, np.ndarray | None, np.ndarray]:
    """Logits of one gated pass, the detector's risk (None unless mode "detector") and the flags."""
    gate = Gate(mode=mode, detector=detector, tau=tau, mask=inputs.get("attention_mask"))
    with gated(model, gate, tap_layer):
        logits = model.forward(inputs)
        risk = None if gate.risk is None else gate.risk.double().numpy()
        flagged = gate.flagged.numpy().copy() if gate.flagged is not None else np.zeros(len(logits), bool)
    return logits, risk, flagged
