"""The MLP training loop GroupDRO and JTT share (the ERM model's MLP and optimiser settings)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fairnet_protocol import metrics


def train_mlp(
    x_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    g_va: np.ndarray,
    n_groups: int,
    seed: int,
    n_epochs: int,
    batch_loss: Any,
    select: bool = True,
    patience: int = 5,
) -> tuple[Any, int, int, float]:
    """The MLP loop GroupDRO and JTT share: seeded init and shuffling, ``batch_loss(module, idx)``
    per step, and (``select``) early stopping on validation worst-group accuracy.

    Returns ``(module, epochs run, best epoch, best validation WGA)``.
    """
    import torch

    from fairfix.models.tabular import TabularMLP, TrainConfig

    cfg = TrainConfig(seed=seed)
    xv = torch.as_tensor(x_va)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = TabularMLP(x_tr.shape[1], cfg.hidden, 2, cfg.dropout)
        opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(seed)
        best, best_epoch, best_state = -1.0, -1, None
        for epoch in range(n_epochs):
            module.train()
            perm = torch.randperm(len(x_tr), generator=gen)
            for s in range(0, len(perm), cfg.batch_size):
                loss = batch_loss(module, perm[s : s + cfg.batch_size])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if not select:
                continue
            module.eval()
            with torch.no_grad():
                pred = module(xv).argmax(1).numpy()
            wga = metrics(pred, y_va, g_va, n_groups, 1)["worst_group_accuracy"]
            if wga > best + 1e-12:
                best, best_epoch = wga, epoch
                best_state = {k: v.clone() for k, v in module.state_dict().items()}
            if epoch - best_epoch >= patience:
                break
        if select:
            module.load_state_dict(best_state)
    module.eval()
    return module, epoch + 1, best_epoch + 1, best
