"""Factories that tests name as ``--factory <this module>:<function>``."""

from __future__ import annotations

import torch
from torch import nn

N_FEATURES = 3


def make_mlp() -> nn.Module:
    """Three linear layers: tap at "0", LoRA on "2", head "4"."""
    return nn.Sequential(
        nn.Linear(N_FEATURES, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2)
    )


def make_three_class() -> nn.Module:
    return nn.Sequential(nn.Linear(N_FEATURES, 4), nn.ReLU(), nn.Linear(4, 3))


def make_logit() -> nn.Module:
    """One output logit per row (a binary model)."""
    return nn.Sequential(nn.Linear(N_FEATURES, 4), nn.Tanh(), nn.Linear(4, 1))


class Squeezed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(N_FEATURES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)  # (B,)


def make_squeezed() -> nn.Module:
    return Squeezed()


def make_not_a_module() -> object:
    return {"not": "a module"}


def make_broken() -> nn.Module:
    raise RuntimeError("no GPU here")


NOT_CALLABLE = 42
