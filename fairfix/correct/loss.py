"""The triplet contrastive loss of FairNet (DESIGN.md section 1, step 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distance(z: torch.Tensor, prototypes: torch.Tensor, kind: str = "euclidean") -> torch.Tensor:
    """Distances ``(N, K)`` between rows ``z (N, D)`` and prototypes ``(K, D)``."""
    if kind == "cosine":
        return 1.0 - F.normalize(z, dim=-1) @ F.normalize(prototypes, dim=-1).T
    if kind != "euclidean":
        raise ValueError(f"distance must be 'euclidean' or 'cosine', not {kind!r}")
    return torch.cdist(z, prototypes)


def triplet_loss(
    z: torch.Tensor,
    y: torch.Tensor,
    majority_prototypes: torch.Tensor,
    *,
    margin: float = 0.5,
    kind: str = "euclidean",
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``max(0, d(z, P[y]) - d(z, P[y']) + margin)``, weighted mean over rows.

    ``majority_prototypes (C, D)``: the majority group's prototype per class.
    ``y'`` is the other class for binary tasks and the nearest other class's
    prototype for multiclass ones.  ``weights (N,)`` (e.g. class-balanced) are
    normalised to sum to one.
    """
    d_all = distance(z, majority_prototypes, kind)  # (N, C)
    d_pos = d_all.gather(1, y.long().unsqueeze(1)).squeeze(1)  # (N,)
    d_other = d_all.masked_fill(F.one_hot(y.long(), d_all.shape[1]).bool(), float("inf"))
    d_neg = d_other.min(dim=1).values  # nearest other class
    per_row = F.relu(d_pos - d_neg + margin)
    if weights is None:
        return per_row.mean()
    w = weights / weights.sum()
    return (per_row * w).sum()
