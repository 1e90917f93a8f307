"""One-pass conditional inference (DESIGN.md section 1, step 4).

One forward pass of the adapted model: a forward hook on the tap layer runs the
bias detector on the tap's output and decides the gate per row; every peft LoRA
layer (all of which sit after the tap) then adds its update to the flagged rows
only.  Rows that are not flagged go through exactly the base layers: their outputs
are bit-identical to the base model's.  All hooks and overrides live in a context
manager and are removed in ``finally``; nothing is left on the modules between calls.

How a LoRA layer is gated.  A vanilla peft ``lora.Linear`` or ``lora.Conv1d/2d/3d``
whose only active adapter is ours gets, for the duration of the block, a forward that runs its base layer on
the whole batch (as the base model does) and then adds the low-rank update to the
flagged rows only: ``out.index_add_(0, rows, lora_B(lora_A(dropout(x[rows]))) *
scaling)``.  Unflagged rows are never touched (exact whatever the adapter's
weights hold, NaN included), and the adapter's cost scales with the share of rows
flagged instead of the batch (peft's own forward runs the update on every row).
A convolution's update is folded into its kernel at inference (``W + scaling * B A``,
peft's ``get_delta_weight``): the flagged rows run that conv, the others the base conv
on their own rows (exact per row: a convolution treats every image alone).
With every row flagged the layer runs peft's own forward unchanged; with none, the
base layer alone.  Any other LoRA layer (another layer type, a variant such as DoRA,
a merged or disabled adapter, other active adapters) is handed the gate as peft's
``adapter_names`` (``"default"`` / ``"__base__"`` per row) for its
``_mixed_batch_forward``, which is exact too but slow: it builds per-row index lists
in Python and gathers and scatters rows with them (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from fairfix.models.base import INPUT

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
    rows: torch.Tensor | None = None  # indices of the flagged rows
    kept: torch.Tensor | None = None  # indices of the others
    all_on: bool = False
    names: list[str] = field(default_factory=list)


def _row_sparse(layer: Any) -> bool:
    """True when ``layer`` is a vanilla peft LoRA Linear or Conv layer whose only active adapter is ours.

    ``layer`` is typed ``Any`` here and in :func:`_sparse_forward`: peft sets a LoRA layer's
    attributes (``lora_A``, ``base_layer``, ``scaling``, ...) at run time, which torch's
    ``nn.Module.__getattr__`` types as ``Tensor | Module``.

    Its forward is then ``base_layer(x) + lora_B(lora_A(dropout(x))) * scaling``, which
    :func:`_sparse_forward` reproduces on the flagged rows; anything else goes through
    ``adapter_names``.
    """
    from peft.tuners.lora import Linear
    from peft.tuners.lora.layer import _ConvNd

    return (type(layer).forward in (Linear.forward, _ConvNd.forward) and list(layer.active_adapters) == [ADAPTER]
            and ADAPTER in layer.lora_B and ADAPTER not in layer.lora_variant
            and not layer.merged and not layer.disable_adapters)


def _sparse_forward(layer: Any, gate: Gate) -> Callable[..., torch.Tensor]:
    """``layer``'s forward with the LoRA update added to the gate's flagged rows only."""
    base = layer.base_layer
    lora_a, lora_b = layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]
    dropout, scaling = layer.lora_dropout[ADAPTER], layer.scaling[ADAPTER]
    peft_forward = type(layer).forward
    # Inference on plain factors (no bias, no active dropout): two matrix products on the
    # flagged rows, A first as (r, D) @ (D, n) -- much faster on CPU than (n, D) @ (D, r)
    # for a small rank r -- and the scaling folded into B, so the scatter needs no alpha.
    plain = (isinstance(lora_a, nn.Linear) and lora_a.bias is None and lora_b.bias is None
             and not torch.is_grad_enabled()
             and (isinstance(dropout, nn.Identity) or not dropout.training))
    scaled_b_t = (lora_b.weight * scaling).t() if plain else None
    # A convolution at inference: the update is folded into the kernel (W + scaling * B A, peft's
    # own delta), and the flagged rows run that one conv while the others run the base conv on
    # their own rows -- one conv's cost in all, where the factors as two more convs (a k x k, then
    # a 1 x 1) cost more than the base conv itself on small feature maps.
    conv = isinstance(base, nn.Conv1d | nn.Conv2d | nn.Conv3d)
    folded = (conv and not torch.is_grad_enabled() and lora_b.bias is None
              and (isinstance(dropout, nn.Identity) or not dropout.training))
    merged_w = (base.weight + layer.get_delta_weight(ADAPTER).to(base.weight.dtype)) if folded else None

    def update_of(part: torch.Tensor) -> torch.Tensor:
        if part.dtype != lora_a.weight.dtype:
            part = part.to(lora_a.weight.dtype)
        if scaled_b_t is None:
            return lora_b(lora_a(dropout(part))) * scaling
        flat = part.reshape(-1, part.shape[-1])  # (n * T, D) for token inputs
        low = torch.mm(lora_a.weight, flat.t()).t()  # (n * T, r)
        return torch.mm(low, scaled_b_t).view(*part.shape[:-1], -1)

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        rows = gate.rows
        if rows is None:  # the tap comes after this layer: cannot happen with default targets
            raise RuntimeError(BEFORE_TAP)
        if merged_w is not None and not args and not kwargs:
            if gate.all_on:
                return base._conv_forward(x, merged_w, base.bias)
            if not len(rows):
                return base(x)
            _check_rows(x, gate)
            keep = cast(torch.Tensor, gate.kept)  # (n_unflagged,): set with rows
            on = base._conv_forward(x.index_select(0, rows), merged_w, base.bias)
            out = x.new_empty((x.shape[0], *on.shape[1:]), dtype=on.dtype)
            out.index_copy_(0, rows, on)
            if len(keep):
                out.index_copy_(0, keep, base(x.index_select(0, keep)))
            return out
        if gate.all_on:
            return peft_forward(layer, x, *args, **kwargs)
        out = base(x, *args, **kwargs)
        if not len(rows):
            return out
        _check_rows(x, gate)
        update = update_of(x.index_select(0, rows)).to(out.dtype)
        if torch.is_grad_enabled():
            return out.index_add(0, rows, update)
        return out.index_add_(0, rows, update)

    return forward


def _check_rows(x: torch.Tensor, gate: Gate) -> None:
    if x.shape[0] != len(gate.flagged):  # type: ignore[arg-type]
        raise RuntimeError(f"a LoRA layer saw {x.shape[0]} rows where the tap layer saw "
                           f"{len(gate.flagged)}: cannot gate it per row")  # type: ignore[arg-type]


@contextmanager
def gated(model: Any, gate: Gate, tap_layer: str, layers: list[nn.Module] | None = None,
          ) -> Iterator[Gate]:
    """Route each row through the adapter or the base for forward passes inside the block.

    ``gate.mode``: ``"detector"`` (risk > tau turns the adapter on), ``"on"`` (every
    row) or ``"off"`` (no row).  After the pass, ``gate.risk`` and ``gate.flagged``
    hold the per-row decision.  ``layers``: the model's LoRA layers when the caller
    keeps them (:func:`lora_layers`; a walk over every module otherwise).
    """
    handles = []
    sparse: list[nn.Module] = []
    slow: list[nn.Module] = []
    for layer in lora_layers(model.module) if layers is None else layers:
        (sparse if _row_sparse(layer) else slow).append(layer)
    gate.flagged = gate.risk = gate.rows = None  # "not decided yet" until the tap runs
    gate.names = []

    def decide(tap_out: torch.Tensor) -> None:
        if gate.mode == "detector":
            gate.risk = gate.detector.risk(tap_out, gate.mask)  # (B,)
            gate.flagged = gate.risk > gate.tau
        else:
            gate.flagged = torch.full((tap_out.shape[0],), gate.mode == "on", dtype=torch.bool,
                                      device=tap_out.device)
            gate.risk = None
        gate.rows = gate.flagged.nonzero().squeeze(1)  # (n_flagged,)
        gate.kept = (~gate.flagged).nonzero().squeeze(1)  # (n - n_flagged,)
        gate.all_on = len(gate.rows) == len(gate.flagged)
        if slow:
            gate.names = [ADAPTER if f else BASE for f in gate.flagged.tolist()]

    def tap_hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
        out = out[0] if isinstance(out, tuple) else out
        decide(out.flatten(1) if out.dim() > 3 else out)  # feature maps (B, C, H, W) -> (B, C*H*W)

    def names_pre_hook(_mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if not gate.names:  # the tap comes after this layer: cannot happen with default targets
            raise RuntimeError(BEFORE_TAP)
        kwargs["adapter_names"] = gate.names
        return args, kwargs

    patched = []
    try:
        if tap_layer == INPUT:  # the detector reads the model's input: decide before any layer runs
            handles.append(model.check_layer(tap_layer).register_forward_pre_hook(
                lambda mod, args: tap_hook(mod, args, args[0].float())))
        else:
            handles.append(model.check_layer(tap_layer).register_forward_hook(tap_hook))
        for layer in sparse:
            layer.forward = _sparse_forward(layer, gate)  # instance attribute, removed below
            patched.append(layer)
        for layer in slow:
            handles.append(layer.register_forward_pre_hook(names_pre_hook, with_kwargs=True))
        yield gate
    finally:
        for h in handles:
            h.remove()
        for layer in patched:
            del layer.forward  # back to the class's forward
        gate.names = []
        gate.mask = None
        gate.rows = gate.kept = None


@torch.no_grad()
def gated_forward(model: Any, inputs: dict[str, torch.Tensor], *, tap_layer: str, mode: str,
                  detector: Any = None, tau: float = 0.5, layers: list[nn.Module] | None = None,
                  ) -> tuple[torch.Tensor, np.ndarray | None, np.ndarray]:
    """Logits of one gated pass, the detector's risk (None unless mode "detector") and the flags."""
    gate = Gate(mode=mode, detector=detector, tau=tau, mask=inputs.get("attention_mask"))
    with gated(model, gate, tap_layer, layers):
        logits = model.forward(inputs)
        risk = None if gate.risk is None else gate.risk.double().cpu().numpy()
        flagged = (gate.flagged.cpu().numpy().copy() if gate.flagged is not None
                   else np.zeros(len(logits), bool))
    return logits, risk, flagged
