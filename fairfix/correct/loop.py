"""One adapter trained for a budget of optimizer steps (DESIGN.md section 1, step 6).

:func:`train_steps` is the one training loop of the correction, for the cross-fitted folds,
the plain split and the shipped adapter alike.  It keeps no state between calls: the LoRA
weights it starts from, the optimizer and the random stream are made from its arguments, so
two calls with the same arguments train the same adapter, and the first ``s`` steps of a
longer budget are the ``s`` steps of a shorter one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fairfix.correct.config import CorrectConfig
from fairfix.correct.loss import objective


@dataclass
class Rows:
    """What one adapter trains on: row ids into the encoded table and, per row, its cell and role.

    ``cells``: the (group, class) cell of each row (every occupied cell weighs alike in a step);
    ``anchors``: rows of a corrected group, which feed the triplet (the rest feed the task loss).
    """

    ids: np.ndarray
    cells: np.ndarray
    anchors: np.ndarray

    def __post_init__(self) -> None:
        assert len(self.ids) == len(self.cells) == len(self.anchors)

    def cell_weights(self) -> np.ndarray:
        """Weights that give every occupied cell the same total, rows within a cell equal."""
        _, inverse, count = np.unique(self.cells, return_inverse=True, return_counts=True)
        return 1.0 / (len(count) * count[inverse])


def batches(rows: Rows, config: CorrectConfig, steps: int, gen: torch.Generator
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches of ``(positions into rows, loss weights)``.

    ``balance="sample"``: each batch is drawn with replacement so that every cell is as likely
    as any other (the few rows of a shortcut cell come back often; weights all 1).
    ``balance="weight"``: shuffled passes over the rows with cell-balanced loss weights.
    """
    w = torch.as_tensor(rows.cell_weights(), dtype=torch.float32)
    n, b = len(rows.ids), config.batch_size
    if config.balance == "sample":
        ones = torch.ones(b)
        for _ in range(steps):
            yield torch.multinomial(w, b, replacement=True, generator=gen), ones
        return
    order = torch.zeros(0, dtype=torch.long)
    for _ in range(steps):
        while len(order) < min(b, n):
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        pos, order = order[:b], order[b:]
        yield pos, w[pos] / w[pos].mean()


def train_steps(
    work: Any,
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    params: list[torch.nn.Parameter],
    start: dict[str, torch.Tensor],
    inputs: dict[str, torch.Tensor],
    y: torch.Tensor,
    rows: Rows,
    reference: torch.Tensor,
    config: CorrectConfig,
    *,
    steps: int,
    seed: int,
    on_eval: Callable[[int], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, list[float]]:
    """Train the adapter's ``params`` for ``steps`` steps from the LoRA state ``start``.

    ``forward`` runs ``work`` with the adapter on for every row; the head input it captures is
    the corrected representation the triplet pulls.  ``on_eval(step)`` is called after every
    ``config.eval_every`` steps (and after the last); ``on_step(step, loss)`` after each.
    Returns the mean loss and the share of anchors with an open hinge per interval.
    """
    work.module.load_state_dict(start, strict=False)
    triplet_w, task_w = config.weights
    ids_all = torch.as_tensor(rows.ids)
    anchors_all = torch.as_tensor(rows.anchors)
    history: dict[str, list[float]] = {"loss": [], "hinge_open_share": []}
    total, n_open, n_anchor, n_steps = 0.0, 0, 0, 0
    candidates = set(eval_steps(steps, config.eval_every))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        for step, (pos, w) in enumerate(batches(rows, config, steps, gen), start=1):
            ids = ids_all[pos]
            batch = {k: v[ids] for k, v in inputs.items()}
            with work.capture_input(work.head_layer) as store:
                logits = forward(batch)  # (B, C), adapter on for every row
            anchors = anchors_all[pos]
            loss, opened = objective(store["in"], logits, y[ids], reference, anchors=anchors, weights=w,
                                     triplet_weight=triplet_w, task_weight=task_w, margin=config.margin,
                                     kind=config.distance, normalize=config.normalize)
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
                opt.step()
            total += float(loss.detach())
            n_open += opened
            n_anchor += int(anchors.sum())
            n_steps += 1
            if on_step is not None:
                on_step(step, float(loss.detach()))
            if step in candidates:
                history["loss"].append(total / n_steps)
                history["hinge_open_share"].append(n_open / n_anchor if n_anchor else 0.0)
                total, n_open, n_anchor, n_steps = 0.0, 0, 0, 0
                if on_eval is not None:
                    on_eval(step)
    return history


def eval_steps(steps: int, every: int) -> list[int]:
    """The steps after which the guard sees a candidate: every ``every`` steps and the last."""
    return sorted({*range(every, steps + 1, every), steps})
