"""One-pass inference with several gated LoRA adapters (one per sensitive attribute).

Progressive correction (``fairfix correct --group A --group B``) keeps one named peft
adapter per attribute in the same model, each switched on per row by its own bias
detector.  Adapter k was trained on the model corrected by adapters ``< k`` (each on
for the rows its detector flags), so a row flagged by several detectors gets the sum
of their low-rank updates at every LoRA layer -- what peft computes with several
active adapters (``set_adapter([...])``), restricted to the rows that want each one:

    out = base_layer(x);  out[rows_k] += lora_B_k(lora_A_k(dropout_k(x[rows_k]))) * scaling_k   (each k)

Rows flagged by no detector go through the base layers alone: bit-identical to the
base model.  Each detector decides at its own tap layer, in the same pass (a hook on
that layer); a LoRA layer of adapter k that would run before detector k has decided
is refused.  All overrides live in :func:`stacked` and are removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fairfix import errors
from fairfix.correct.gating import BEFORE_TAP, lora_layers
from fairfix.models.base import INPUT


@dataclass
class Stage:
    """One attribute's gate: its adapter (None: a detector without an adapter yet), tap, detector and rule.

    ``mode``: ``"detector"`` (risk > tau), ``"on"`` (every row) or ``"off"`` (no row).
    ``detector``: the detector's torch module (``risk(values, mask)``), or None for modes on/off.
    """

    adapter: str | None
    tap_layer: str
    mode: str = "detector"
    detector: Any = None
    tau: float = 0.5


@dataclass
class Decision:
    """What one stage decided in the current pass."""

    risk: torch.Tensor | None = None
    flagged: torch.Tensor | None = None
    rows: torch.Tensor | None = None


def _check_layer(layer: Any, names: Sequence[str]) -> None:
    from peft.tuners.lora import Linear
    from peft.tuners.lora.layer import _ConvNd

    if type(layer).forward not in (Linear.forward, _ConvNd.forward) or layer.merged:
        raise errors.ModelError(f"several adapters need plain peft LoRA Linear/Conv layers; {type(layer).__name__} "
                                "(merged, or another layer type) cannot be gated per row and per adapter")
    variants = [n for n in names if n in layer.lora_variant]
    if variants:
        raise errors.ModelError(f"adapter {variants[0]!r} is a LoRA variant (DoRA, ...): several attributes "
                                "need plain LoRA")


def _stacked_forward(layer: Any, adapters: list[tuple[str, Decision]], n_rows: Callable[[], int]
                     ) -> Callable[..., torch.Tensor]:
    """``layer``'s forward: the base layer on every row, then each adapter's update on its flagged rows."""
    base = layer.base_layer

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = base(x, *args, **kwargs)
        for name, dec in adapters:
            rows = dec.rows
            if rows is None:
                raise RuntimeError(BEFORE_TAP)
            if not len(rows):
                continue
            if x.shape[0] != n_rows():
                raise RuntimeError(f"a LoRA layer saw {x.shape[0]} rows where the tap layer saw {n_rows()}: "
                                   "cannot gate it per row")
            lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
            part = x.index_select(0, rows)
            if part.dtype != lora_a.weight.dtype:
                part = part.to(lora_a.weight.dtype)
            update = (lora_b(lora_a(layer.lora_dropout[name](part))) * layer.scaling[name]).to(out.dtype)
            out = out.index_add(0, rows, update) if torch.is_grad_enabled() else out.index_add_(0, rows, update)
        return out

    return forward


@contextmanager
def stacked(model: Any, stages: Sequence[Stage], mask: torch.Tensor | None = None,
            layers: list[nn.Module] | None = None) -> Iterator[list[Decision]]:
    """Route each row through the adapters whose stage flags it, for forward passes inside the block.

    Yields one :class:`Decision` per stage, filled by each pass (``risk`` None for a stage
    without a detector).  ``mask``: the attention mask of token inputs (the detectors' pooling).
    """
    decisions = [Decision() for _ in stages]
    size = {"n": 0}
    handles, patched = [], []

    def decider(stage: Stage, dec: Decision) -> Callable[[torch.Tensor], None]:
        def decide(tap_out: torch.Tensor) -> None:
            tap_out = tap_out.flatten(1) if tap_out.dim() > 3 else tap_out  # (B, C, H, W) -> (B, C*H*W)
            n = tap_out.shape[0]
            size["n"] = n
            dec.risk = stage.detector.risk(tap_out, mask) if stage.detector is not None else None
            if stage.mode == "detector":
                if dec.risk is None:
                    raise ValueError("a stage in mode 'detector' needs a detector")
                dec.flagged = dec.risk > stage.tau
            else:
                dec.flagged = torch.full((n,), stage.mode == "on", dtype=torch.bool, device=tap_out.device)
            dec.rows = dec.flagged.nonzero().squeeze(1)  # (n_flagged,)
        return decide

    try:
        for stage, dec in zip(stages, decisions, strict=True):
            if stage.mode not in ("detector", "on", "off"):
                raise ValueError(f"stage mode {stage.mode!r}")
            dec.risk = dec.flagged = dec.rows = None
            decide = decider(stage, dec)
            module = model.check_layer(stage.tap_layer)
            if stage.tap_layer == INPUT:  # the detector reads the input: decide before any layer runs
                handles.append(module.register_forward_pre_hook(
                    lambda _m, args, decide=decide: decide(args[0].float())))
            else:
                handles.append(module.register_forward_hook(
                    lambda _m, _i, out, decide=decide: decide(out[0] if isinstance(out, tuple) else out)))
        by_name = {s.adapter: d for s, d in zip(stages, decisions, strict=True) if s.adapter is not None}
        layer: Any
        for layer in lora_layers(model.module) if layers is None else layers:
            mine = [(name, dec) for name, dec in by_name.items() if name in layer.lora_A]
            _check_layer(layer, [n for n, _ in mine])
            layer.forward = _stacked_forward(layer, mine, lambda: size["n"])  # instance attribute, removed below
            patched.append(layer)
        yield decisions
    finally:
        for h in handles:
            h.remove()
        for layer in patched:
            del layer.forward  # back to the class's forward


@torch.no_grad()
def stacked_forward(model: Any, inputs: dict[str, torch.Tensor], stages: Sequence[Stage],
                    layers: list[nn.Module] | None = None
                    ) -> tuple[torch.Tensor, list[np.ndarray | None], list[np.ndarray]]:
    """Logits of one pass, and per stage the detector's risk (None without one) and the flags."""
    with stacked(model, stages, inputs.get("attention_mask"), layers) as decisions:
        logits = model.forward(inputs)
        risks = [None if d.risk is None else d.risk.double().cpu().numpy() for d in decisions]
        flags = [np.zeros(len(logits), bool) if d.flagged is None else d.flagged.cpu().numpy().copy()
                 for d in decisions]
    return logits, risks, flags
