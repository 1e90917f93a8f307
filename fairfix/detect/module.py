"""The bias detector network: (attention pooling ->) standardisation -> MLP -> one logit.

The detector reads the frozen base model's representation at the tap layer and
scores the risk that a row belongs to a disadvantaged group.  It outputs a
*logit*; training uses ``BCEWithLogitsLoss`` (never a sigmoid followed by a
log), and ``risk = sigmoid(logit)`` only at inference.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn


class AttentionPool(nn.Module):
    """Mask-aware attention pooling of token states ``(B, T, D)`` into ``(B, D)``.

    Padding positions get exactly zero weight (their scores are -inf before the
    softmax and their states are zeroed), so the result does not depend on how
    much padding a batch carries.
    """

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention-pool the unmasked positions of ``h`` (B, T, D) into one vector per row (B, D)."""
        keep = mask.bool()  # (B, T)
        h = h.masked_fill(~keep.unsqueeze(-1), 0.0)  # (B, T, D)
        s = self.score(torch.tanh(self.proj(h))).squeeze(-1)  # (B, T)
        s = s.masked_fill(~keep, float("-inf"))
        w = torch.softmax(s, dim=-1)  # (B, T); rows of all padding cannot occur (>= 1 token)
        return torch.einsum("bt,btd->bd", w, h)  # (B, D)


class BiasDetector(nn.Module):
    """Risk logit of belonging to a minority group, from a tap-layer representation.

    Parameters
    ----------
    dim
        Width of the representation.
    hidden
        Width of the MLP's hidden layer; 0 makes the detector linear (logistic
        regression on the standardised representation: the cheapest at inference).
    sequence
        True when the representation is a token sequence (adds attention pooling).
    """

    mean: torch.Tensor  # buffers (register_buffer): tensors, not submodules
    scale: torch.Tensor

    def __init__(self, dim: int, hidden: int = 64, sequence: bool = False, dropout: float = 0.1):
        super().__init__()
        self.sequence = sequence
        self.pool = AttentionPool(dim) if sequence else None
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.mlp = (
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
            if hidden else nn.Sequential(nn.Linear(dim, 1))
        )
        self._fold: tuple[Any, torch.Tensor, torch.Tensor] | None = None  # see _folded_logits

    def set_standardisation(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """Centre and scale inputs (statistics of the training representations)."""
        self.mean.copy_(mean)
        self.scale.copy_(torch.where(scale > 1e-6, scale, torch.ones_like(scale)))

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B,)`` for ``h`` of shape ``(B, D)`` or ``(B, T, D)`` with ``mask (B, T)``."""
        h = (h - self.mean) / self.scale
        if self.pool is not None:
            if mask is None:
                mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
            h = self.pool(h, mask)  # (B, D)
        return self.mlp(h).squeeze(-1)  # (B,)

    def _folded_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits of vector inputs, the standardisation folded into the first layer.

        ``(h - mean) / scale`` becomes ``W / scale`` and ``b - (W / scale) @ mean``: two
        passes over ``h`` fewer, the same logits up to float rounding (gated inference
        runs this on every batch).
        """
        first = cast(nn.Linear, self.mlp[0])
        tensors = (first.weight, first.bias, self.mean, self.scale)
        # kept while none of the four tensors is replaced or changed in place (optimiser steps,
        # load_state_dict and set_standardisation all bump a tensor's version)
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if self._fold is None or self._fold[0] != key:
            weight = first.weight / self.scale  # (H, D), small next to h (B, D)
            bias = torch.addmv(first.bias, weight, self.mean, alpha=-1)
            self._fold = (key, weight.t(), bias)
        _, weight_t, bias = self._fold
        z = torch.addmm(bias, h, weight_t)
        for layer in list(self.mlp)[1:]:  # ReLU, Dropout (eval: identity), Linear
            z = layer(z)
        return z.squeeze(-1)

    @torch.no_grad()
    def risk(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``sigmoid(logit)`` in [0, 1], shape ``(B,)``."""
        if not self.training:  # the usual case: skip two walks over the submodules
            if self.pool is None:  # vector taps: the standardisation folded into the first layer
                return torch.sigmoid(self._folded_logits(h))
            return torch.sigmoid(self.forward(h, mask))
        was = self.training
        self.eval()
        try:
            return torch.sigmoid(self.forward(h, mask))
        finally:
            self.train(was)
