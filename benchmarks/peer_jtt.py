"""Peer: Just Train Twice (Liu et al. 2021)."""

from __future__ import annotations

from typing import Any

import numpy as np
from peer_mlp import train_mlp


def jtt(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    g_va: np.ndarray,
    n_groups: int,
    seed: int,
    quick: bool,
    id_epochs: int = 1,
    lambdas: tuple[float, ...] = (5.0, 20.0, 50.0),
    patience: int = 5,
) -> tuple[Any, dict[str, Any]]:
    """Just Train Twice (Liu et al. 2021); same MLP, preprocessing and loop as ``group_dro``.

    Identification: the MLP trained with plain cross-entropy for ``id_epochs`` epochs; its
    training-set errors get weight ``lambda_up`` in a second, from-scratch training (weighted
    cross-entropy, batch loss = sum(w * loss) / sum(w)), early-stopped on validation WGA.
    ``lambda_up`` is the one of ``lambdas`` with the best validation WGA.  Groups are read on
    validation only.
    """
    import torch
    import torch.nn.functional as F

    from fairfix.models.tabular import TrainConfig

    epochs = 3 if quick else TrainConfig().epochs
    xt, yt = torch.as_tensor(x_tr), torch.as_tensor(y_tr)

    def train(weights: torch.Tensor, n_epochs: int, select: bool) -> tuple[Any, int, int, float]:
        def batch_loss(module: Any, idx: Any) -> Any:
            w = weights[idx]
            return (w * F.cross_entropy(module(xt[idx]), yt[idx], reduction="none")).sum() / w.sum()

        return train_mlp(x_tr, x_va, y_va, g_va, n_groups, seed, n_epochs, batch_loss, select, patience)

    ident, _, _, _ = train(torch.ones(len(yt)), id_epochs, select=False)
    with torch.no_grad():
        errors = ident(xt).argmax(1) != yt
    fits = {}
    for lam in lambdas:
        fits[lam] = train(1.0 + (lam - 1.0) * errors.float(), epochs, select=True)
    lam = max(lambdas, key=lambda v: (fits[v][3], -lambdas.index(v)))
    module, epochs_run, best_epoch, val_wga = fits[lam]
    info = {
        "lambda_up": lam,
        "error_rate": float(errors.float().mean()),
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "val_wga": val_wga,
        "val_wga_by_lambda": {str(v): fits[v][3] for v in lambdas},
    }
    return module, info
