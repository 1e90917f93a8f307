"""Peer: Group DRO (Sagawa et al. 2020, online algorithm) over (group, label) cells."""

from __future__ import annotations

from typing import Any

import numpy as np
from peer_mlp import train_mlp


def group_dro(
    model: Any,
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    g_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    g_va: np.ndarray,
    n_groups: int,
    seed: int,
    quick: bool,
    eta: float = 0.01,
    patience: int = 5,
) -> tuple[Any, dict[str, Any]]:
    """Group DRO (Sagawa et al. 2020, online algorithm) over (group, label) cells; same MLP."""
    import torch
    import torch.nn.functional as F

    from fairfix.models.tabular import TrainConfig

    epochs = 3 if quick else TrainConfig().epochs
    n_cells = n_groups * 2
    cell_tr = torch.as_tensor(g_tr * 2 + y_tr)
    xt, yt = torch.as_tensor(x_tr), torch.as_tensor(y_tr)
    q = torch.full((n_cells,), 1.0 / n_cells)

    def batch_loss(module: Any, idx: Any) -> Any:
        nonlocal q
        losses = F.cross_entropy(module(xt[idx]), yt[idx], reduction="none")
        cells = cell_tr[idx]
        cnt = torch.bincount(cells, minlength=n_cells).float()
        cell_loss = torch.zeros(n_cells).index_add(0, cells, losses) / cnt.clamp(min=1)
        q = q * torch.exp(eta * cell_loss.detach())  # absent cells: loss 0, q unchanged
        q = q / q.sum()
        return (q * cell_loss).sum()

    module, epochs_run, best_epoch, best = train_mlp(x_tr, x_va, y_va, g_va, n_groups, seed, epochs, batch_loss,
                                                      patience=patience)
    return module, {"epochs_run": epochs_run, "best_epoch": best_epoch, "val_wga": best}
