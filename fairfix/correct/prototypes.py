"""Prototypes: the mean final representation per (class, group) cell, from the frozen base."""

from __future__ import annotations

import torch


def cell_means(z: torch.Tensor, y: torch.Tensor, g: torch.Tensor, n_classes: int, n_groups: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Means ``(C, G, D)`` and counts ``(C, G)`` of ``z (N, D)`` per (class ``y``, group ``g``) cell.

    Vectorised with one ``index_add_``; empty cells have a zero mean and count 0.
    """
    cell = y.long() * n_groups + g.long()  # (N,)
    d = z.shape[1]
    sums = torch.zeros(n_classes * n_groups, d, dtype=torch.float64).index_add_(0, cell, z.double())
    counts = torch.bincount(cell, minlength=n_classes * n_groups).double()  # (C*G,)
    means = sums / counts.clamp(min=1).unsqueeze(1)
    return means.view(n_classes, n_groups, d).float(), counts.view(n_classes, n_groups).long()
