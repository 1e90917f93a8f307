"""The ERM loop (FairNet's stage 1), shared by every model kind fairfix trains on encoded rows.

:func:`erm_fit` trains any torch module on an in-memory ``(N, F)`` input matrix
with cross-entropy, AdamW, shuffled mini-batches and early stopping on a
validation split.  The tabular MLP (:func:`fairfix.models.tabular.train_tabular`)
and factory modules (:func:`fairfix.models.factory.train_factory`) both train
through it, so the loop exists once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from fairfix import errors

Progress = Callable[[int, int, dict[str, float]], None]
M = TypeVar("M", bound=nn.Module)


@dataclass
class ErmConfig:
    """Hyper-parameters of the ERM loop (recorded in the manifest)."""

    #: The budget in passes over the rows (the loop's candidates at each pass's end), or
    #: None to count it in ``steps`` instead.
    epochs: int | None = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    val_fraction: float = 0.1
    #: Stop after this many evaluations without a better validation loss.
    patience: int = 4
    seed: int = 0
    #: The budget in optimizer steps, whatever the table's size (used when ``epochs`` is None):
    #: a small table gets as many steps as a large one (DESIGN.md section 1, step 6).
    steps: int = 2000
    #: Evaluate (and keep the best weights) every this many steps; None: at each pass's end.
    eval_every: int | None = None

    def __post_init__(self) -> None:
        self._check({
            "epochs": self.epochs is None or self.epochs >= 1,
            "steps": self.steps >= 1,
            "eval_every": self.eval_every is None or self.eval_every >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "val_fraction": 0.0 <= self.val_fraction < 1.0,
            "patience": self.patience >= 1,
        })

    def _check(self, checks: dict[str, bool]) -> None:
        errors.check_options("training", self, checks)

    def budget(self, rows: int) -> tuple[int, int]:
        """(optimizer steps, steps between evaluations) for ``rows`` training rows."""
        per_pass = max(1, -(-rows // self.batch_size))
        total = self.steps if self.epochs is None else self.epochs * per_pass
        return total, min(total, self.eval_every or per_pass)


def split_rows(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows), sorted: a seeded permutation's first share validates."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction)) if val_fraction > 0 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def erm_fit(
    build: Callable[[], M],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    config: ErmConfig,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    progress: Progress | None = None,
) -> tuple[M, dict[str, Any]]:
    """Build a module and train it with ERM; return it (best epoch's weights, eval mode) and a log.

    Reproducible bit for bit on CPU for a given ``config.seed``: ``build`` runs
    right after the global torch RNG is seeded (so weight initialisation is
    seeded), batches are drawn from a generator seeded here, and the global RNG
    is restored afterwards (no global seeding leaks out).

    Parameters
    ----------
    build
        Returns the untrained module; called once, under the seeded RNG.
    x, y
        Every row's inputs ``(N, ...)`` and class indices ``(N,)``.
    train_idx, val_idx
        Rows to train on and rows for early stopping (may be empty: the
        training loss decides then).
    config
        Epochs, batch size, learning rate, weight decay, patience, seed.
    forward
        ``forward(module, x_batch) -> logits (B, C)``; default ``module(x_batch)``.
    progress
        Called after each evaluation with (evaluations done, evaluations in the budget, metrics).

    Returns
    -------
    module, info
        ``info`` has ``steps_run``, ``best_step``, ``epochs_run`` (evaluations),
        ``best_epoch`` (the best evaluation, 1-based), the per-evaluation ``history``
        and the row counts.

    The budget is ``config.budget``: steps, or passes over the rows; batches are shuffled
    passes either way, and an evaluation every ``eval_every`` steps (or pass) is a candidate.
    """
    run = forward or (lambda m, xb: m(xb))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        module = build()
        opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        best = (math.inf, -1)
        best_state = {k: v.clone() for k, v in module.state_dict().items()}
        history: list[dict[str, float]] = []
        gen = torch.Generator().manual_seed(config.seed)
        tr = torch.from_numpy(np.asarray(train_idx))
        n_val = len(val_idx)
        budget, every = config.budget(len(tr))
        n_evals = -(-budget // every)
        perm = tr[:0]
        total, seen, step = 0.0, 0, 0
        module.train()
        while step < budget:
            if len(perm) == 0:
                perm = tr[torch.randperm(len(tr), generator=gen)]
            idx, perm = perm[: config.batch_size], perm[config.batch_size :]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(run(module, x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            step += 1
            if step % every and step < budget:
                continue
            module.eval()
            metrics = {"train_loss": total / max(seen, 1), "step": float(step)}
            total, seen = 0.0, 0
            if n_val:
                with torch.no_grad():
                    logits = run(module, x[val_idx])
                    metrics["val_loss"] = float(loss_fn(logits, y[val_idx]))
                    metrics["val_accuracy"] = float((logits.argmax(1) == y[val_idx]).float().mean())
            history.append(metrics)
            evaluation = len(history) - 1
            score = metrics.get("val_loss", metrics["train_loss"])
            if score < best[0] - 1e-6:
                best = (score, evaluation)
                best_state = {k: v.clone() for k, v in module.state_dict().items()}
            if progress is not None:
                progress(evaluation + 1, n_evals, {k: v for k, v in metrics.items() if k != "step"})
            if evaluation - best[1] >= config.patience:
                break
            module.train()
        module.load_state_dict(best_state)
    module.eval()
    info = {"epochs_run": len(history), "best_epoch": best[1] + 1, "history": history,
            "steps_run": int(history[-1]["step"]) if history else 0,
            "best_step": int(history[best[1]]["step"]) if history and best[1] >= 0 else 0,
            "train_rows": int(len(train_idx)), "val_rows": int(n_val)}
    return module, info
