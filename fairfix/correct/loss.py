"""The triplet contrastive loss of FairNet (DESIGN.md section 1, step 3).

Distances are taken on L2-normalised representations and prototypes by default
(``normalize=True``): every distance then lies in [0, 2] whatever the scale of the
model's features, so a margin in 0.1-1.0 means the same on an MLP, a CNN and a
transformer.  On raw features the hinge is out of scale with such a margin
(always closed on a converged network with large activations, always open on a
small one), and the loss either does nothing or never stops pushing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distance(z: torch.Tensor, prototypes: torch.Tensor, kind: str = "euclidean",
             normalize: bool = True) -> torch.Tensor:
    """Distances ``(N, K)`` between rows ``z (N, D)`` and prototypes ``(K, D)``.

    ``euclidean`` on L2-normalised vectors when ``normalize`` (in [0, 2]), on the raw
    vectors otherwise; ``cosine`` is ``1 - cos`` (in [0, 2]) either way.
    """
    if kind == "cosine":
        return 1.0 - F.normalize(z, dim=-1) @ F.normalize(prototypes, dim=-1).T
    if kind != "euclidean":
        raise ValueError(f"distance must be 'euclidean' or 'cosine', not {kind!r}")
    if normalize:
        z, prototypes = F.normalize(z, dim=-1), F.normalize(prototypes, dim=-1)
    return torch.cdist(z, prototypes)


def hinge(
    z: torch.Tensor,
    y: torch.Tensor,
    prototypes: torch.Tensor,
    *,
    margin: float = 0.5,
    kind: str = "euclidean",
    normalize: bool = True,
) -> torch.Tensor:
    """Per-row ``d(z, P[y]) - d(z, P[y']) + margin`` ``(N,)``; the row's hinge is open where it is > 0.

    ``prototypes (C, D)``: the reference prototype per class.  ``y'`` is the nearest
    other class's prototype (the other class for binary tasks).
    """
    d_all = distance(z, prototypes, kind, normalize)  # (N, C)
    d_pos = d_all.gather(1, y.long().unsqueeze(1)).squeeze(1)  # (N,)
    d_other = d_all.masked_fill(F.one_hot(y.long(), d_all.shape[1]).bool(), float("inf"))
    d_neg = d_other.min(dim=1).values  # nearest other class
    return d_pos - d_neg + margin


def triplet_loss(
    z: torch.Tensor,
    y: torch.Tensor,
    prototypes: torch.Tensor,
    *,
    margin: float = 0.5,
    kind: str = "euclidean",
    weights: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """``max(0, d(z, P[y]) - d(z, P[y']) + margin)``, weighted mean over rows.

    ``prototypes (C, D)``: the reference prototype per class (the paper's majority
    prototypes; fairfix takes, per class, the group the base model serves best).
    ``weights (N,)`` (e.g. class-balanced) are normalised to sum to one.
    """
    per_row = F.relu(hinge(z, y, prototypes, margin=margin, kind=kind, normalize=normalize))
    if weights is None:
        return per_row.mean()
    w = weights / weights.sum()
    return (per_row * w).sum()


def objective(
    z: torch.Tensor,
    logits: torch.Tensor,
    y: torch.Tensor,
    reference: torch.Tensor,
    *,
    anchors: torch.Tensor,
    weights: torch.Tensor,
    triplet_weight: float,
    task_weight: float,
    margin: float,
    kind: str = "euclidean",
    normalize: bool = True,
) -> tuple[torch.Tensor, int]:
    """The adapter's loss on one batch, and how many of its anchors have an open hinge.

    ``z (B, D)`` the corrected head inputs, ``logits (B, C)`` the frozen head's outputs on them;
    ``anchors (B,)`` marks the rows of the corrected groups that feed the triplet; ``weights (B,)``
    the rows' weights (cell-balanced, or all 1 when the batch was drawn cell-balanced).
    Both terms are weighted means, so their scales do not depend on the batch's make-up:
    ``triplet_weight * triplet + task_weight * cross-entropy`` (DESIGN.md section 1, step 6).
    """
    loss = logits.new_zeros(())
    n_open = 0
    if triplet_weight > 0 and bool(anchors.any()):
        h = hinge(z[anchors], y[anchors], reference, margin=margin, kind=kind, normalize=normalize)
        wa = weights[anchors]
        loss = loss + triplet_weight * (F.relu(h) * wa).sum() / wa.sum()
        n_open = int((h.detach() > 0).sum())
    if task_weight > 0:
        ce = F.cross_entropy(logits, y, reduction="none")
        loss = loss + task_weight * (ce * weights).sum() / weights.sum()
    return loss, n_open
