"""One-pass conditional inference (DESIGN.md section 1, step 4).

One forward pass of the adapted model: a forward hook on the tap layer runs the
bias detector on the tap's output and fills a per-row gate; every peft LoRA layer
(all of which sit after the tap) then adds its update to the flagged rows only.
Rows that are not flagged go through exactly the base layers: their outputs are
bit-identical to the base model's.  All hooks live in a context manager and are
removed in ``finally``; nothing is left on the modules between calls.

How a LoRA layer is gated.  A vanilla peft ``lora.Linear`` whose only active adapter
is ours runs its ordinary forward, ``base_layer(x) + lora_B(lora_A(dropout(x))) *
scaling``, and a forward hook on its ``lora_B`` sets the update of unflagged rows to
exactly ``-0.0`` (on the float's bits, see :func:`_zero_unflagged`):
``y + (-0.0) * scaling == y`` bit for bit for every float ``y`` (scaling > 0; signed
zeros included, and whatever the adapter's weights hold, NaN included), so those rows
keep the base layer's output, and flagged rows get exactly the plain peft output.  The
base layer runs on the whole batch either way, as in the base model.  With every row
flagged the hook leaves the update alone.  Any other LoRA layer (another layer type, a
variant such as DoRA, a merged or disabled adapter, other active adapters) is handed
the gate as peft's ``adapter_names`` (``"default"`` / ``"__base__"`` per row) for its
``_mixed_batch_forward``, which is exact too but slow: it builds per-row index lists
in Python and gathers and scatters rows with them (on the Adult MLP, batch 1024, that
path cost about half the base model's forward more; docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

#: peft's default name: saved at the top of the adapter folder, as PEFT tools expect.
ADAPTER = "default"
BASE = "__base__"


def lora_layers(module: nn.Module) -> list[nn.Module]:
    """The peft LoRA layers inside ``module``."""
    from peft.tuners.lora import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer)]


BEFORE_TAP = "a LoRA layer ran before the tap layer decided the gate"


@dataclass
class Gate:
    """Per-call gating state; lives only inside :func:`gated`."""

    mode: str  # "detector", "on" or "off"
    detector: Any = None
    tau: float = 0.5
    mask: torch.Tensor | None = None
    risk: torch.Tensor | None = None
    flagged: torch.Tensor | None = None
    all_on: bool = False
    names: list[str] = field(default_factory=list)
    bits: dict[Any, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


#: Integer type of the same width as each float type (the update is masked on its bits).
_BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
         torch.bfloat16: torch.int16}


def _zero_unflagged(out: torch.Tensor, flagged: torch.Tensor,
                    cache: dict[Any, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``out`` with the rows that are not flagged set to exactly ``-0.0`` (flagged rows untouched).

    ``-0.0`` (not ``+0.0``) because ``y + (-0.0) == y`` for every float ``y``, ``-0.0``
    included.  Without autograd this is done in place on the float's bits,
    ``(bits & keep) | sign`` with ``keep`` all ones on flagged rows (0 elsewhere) and
    ``sign`` the sign bit on the other rows (0 on flagged ones): exact whatever ``out``
    holds (NaN included) and several times faster on CPU than ``torch.where``, which
    cost about a tenth of the Adult MLP's forward.
    """
    shape = (-1,) + (1,) * (out.dim() - 1)
    itype = _BITS.get(out.dtype)
    if itype is None or torch.is_grad_enabled():
        return torch.where(flagged.view(shape), out, -0.0)
    key = (itype, out.dim(), out.device)
    if key not in cache:
        flag = flagged.to(device=out.device, dtype=itype).view(shape)  # 1 flagged, 0 not
        cache[key] = (flag.neg(), (1 - flag) * torch.iinfo(itype).min)  # (keep, sign)
    keep, sign = cache[key]
    out.view(itype).bitwise_and_(keep).bitwise_or_(sign)
    return out


def _masks_output(layer: nn.Module) -> bool:
    """True when ``layer`` is a vanilla peft LoRA Linear whose only active adapter is ours.

    Its forward then adds ``lora_B(...) * scaling`` to the base output, so gating the
    output of ``lora_B`` gates the update; anything else goes through ``adapter_names``.
    """
    from peft.tuners.lora import Linear

    return (type(layer).forward is Linear.forward and list(layer.active_adapters) == [ADAPTER]
            and ADAPTER in layer.lora_B and ADAPTER not in layer.lora_variant
            and not layer.merged and not layer.disable_adapters)


@contextmanager
def gated(model: Any, gate: Gate, tap_layer: str) -> Iterator[Gate]:
    """Route each row through the adapter or the base for forward passes inside the block.

    ``gate.mode``: ``"detector"`` (risk > tau turns the adapter on), ``"on"`` (every
    row) or ``"off"`` (no row).  After the pass, ``gate.risk`` and ``gate.flagged``
    hold the per-row decision.
    """
    handles = []
    fast, slow = [], []
    for layer in lora_layers(model.module):
        (fast if _masks_output(layer) else slow).append(layer)
    gate.flagged = gate.risk = None  # "not decided yet" until the tap runs
    gate.names = []

    def decide(tap_out: torch.Tensor) -> None:
        if gate.mode == "detector":
            gate.risk = gate.detector.risk(tap_out, gate.mask)  # (B,)
            gate.flagged = gate.risk > gate.tau
        else:
            gate.flagged = torch.full((tap_out.shape[0],), gate.mode == "on", dtype=torch.bool,
                                      device=tap_out.device)
            gate.risk = None
        gate.all_on = gate.mode == "on" or bool(gate.flagged.all())
        gate.bits = {}
        if slow:
            gate.names = [ADAPTER if f else BASE for f in gate.flagged.tolist()]

    def tap_hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
        decide(out[0] if isinstance(out, tuple) else out)

    def gate_update(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor | None:
        flagged = gate.flagged
        if flagged is None:  # the tap comes after this layer: cannot happen with default targets
            raise RuntimeError(BEFORE_TAP)
        if gate.all_on:
            return None
        if out.shape[0] != flagged.shape[0]:
            raise RuntimeError(f"a LoRA layer saw {out.shape[0]} rows where the tap layer saw "
                               f"{flagged.shape[0]}: cannot gate it per row")
        return _zero_unflagged(out, flagged, gate.bits)  # y + (-0.0) * scaling == y, bit for bit

    def names_pre_hook(_mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if not gate.names:  # the tap comes after this layer: cannot happen with default targets
            raise RuntimeError(BEFORE_TAP)
        kwargs["adapter_names"] = gate.names
        return args, kwargs

    try:
        handles.append(model.check_layer(tap_layer).register_forward_hook(tap_hook))
        for layer in fast:
            handles.append(layer.lora_B[ADAPTER].register_forward_hook(gate_update))
        for layer in slow:
            handles.append(layer.register_forward_pre_hook(names_pre_hook, with_kwargs=True))
        yield gate
    finally:
        for h in handles:
            h.remove()
        gate.names = []
        gate.mask = None


@torch.no_grad()
def gated_forward(model: Any, inputs: dict[str, torch.Tensor], *, tap_layer: str, mode: str,
                  detector: Any = None, tau: float = 0.5,
                  ) -> tuple[torch.Tensor, np.ndarray | None, np.ndarray]:
    """Logits of one gated pass, the detector's risk (None unless mode "detector") and the flags."""
    gate = Gate(mode=mode, detector=detector, tau=tau, mask=inputs.get("attention_mask"))
    with gated(model, gate, tap_layer):
        logits = model.forward(inputs)
        risk = None if gate.risk is None else gate.risk.double().cpu().numpy()
        flagged = (gate.flagged.cpu().numpy().copy() if gate.flagged is not None
                   else np.zeros(len(logits), bool))
    return logits, risk, flagged
