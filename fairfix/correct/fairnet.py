"""FairNet: contrastive conditional LoRA with a no-loss guard (DESIGN.md section 1, steps 2-5).

``fit_fairnet`` is the one training loop for every label mode: the mode only
decides which rows are "minority" (true labels, the labeled subset, or the
detector's flags) and so which rows and prototypes feed the loss.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fairfix import errors
from fairfix.correct.gating import ADAPTER, gated_forward, lora_layers
from fairfix.correct.loss import triplet_loss
from fairfix.correct.prototypes import cell_means
from fairfix.models.base import Model

TAUS = (*(round(float(t), 2) for t in np.linspace(0.05, 0.95, 19)), 0.97, 0.99)
#: Strengths of the adapter swept by the guard: the LoRA update is scaled by this factor
#: (saved into the PEFT config as lora_alpha * strength, so PEFT tools load the same model).
STRENGTHS = (0.1, 0.25, 0.5, 0.75, 1.0)


@dataclass
class CorrectConfig:
    """Options of the correction (recorded in the bundle)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] | None = None
    margin: float = 0.5
    distance: str = "euclidean"
    ce_weight: float = 1.0
    train_on: str = "flagged"
    epochs: int = 8
    batch_size: int = 256
    lr: float = 2e-3
    tau: float | None = None
    strengths: tuple[float, ...] = STRENGTHS
    max_accuracy_drop: float = 0.0
    #: The guard's margin in standard errors of the paired per-row accuracy change (see
    #: :func:`accuracy_change`): a setting passes when gain - guard_se * se >= -max_accuracy_drop.
    #: 0 is the plain floor, which lost accuracy on test (docs/results.md, "the guard").
    guard_se: float = 1.0
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "rank": self.rank >= 1, "alpha": self.alpha > 0, "dropout": 0 <= self.dropout < 1,
            "margin": self.margin >= 0, "ce_weight": self.ce_weight >= 0, "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "max_accuracy_drop": 0 <= self.max_accuracy_drop < 1, "val_fraction": 0 < self.val_fraction < 1,
            "guard_se": 0 <= self.guard_se <= 10,
            "distance": self.distance in ("euclidean", "cosine"),
            "train_on": self.train_on in ("minority", "flagged"),
            "tau": self.tau is None or 0 <= self.tau <= 1,
            "strengths": len(self.strengths) >= 1 and all(0 < x <= 1 for x in self.strengths),
        }
        errors.check_options("correction", self, checks)


class CorrectedModel(Model):
    """A base model with a FairNet adapter switched on per row by the bias detector."""

    kind = "fairnet_bundle"

    def __init__(self, base: Model, peft_model: Any, detector: Any, *, tau: float | None, enabled: bool,
                 tap_layer: str, prototypes: dict[str, torch.Tensor] | None = None,
                 info: dict[str, Any] | None = None, **kw: Any):
        super().__init__(base.module, base.classes, base.positive, base.input_columns, **kw)
        self.base = base
        self.peft_model = peft_model
        self.detector = detector  # fairfix.detect.Detector
        self.tau = tau
        self.enabled = enabled
        self.tap_layer = tap_layer
        self.prototypes = prototypes or {}
        self.info = info or {}
        self.batch_rows = base.batch_rows
        self.numeric_columns = base.numeric_columns
        self._lora: list[nn.Module] | None = None  # the LoRA layers, found on first use

    @property
    def lora(self) -> list[nn.Module]:
        """The adapter's LoRA layers (one walk over the modules, then kept)."""
        if self._lora is None:
            self._lora = lora_layers(self.base.module)
        return self._lora

    def encode(self, frame: Any) -> dict[str, torch.Tensor]:
        """The base model's inputs."""
        return self.base.encode(frame)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the gated pass (the base's logits when the adapter is disabled)."""
        return self.gated(inputs)[0]

    def gated(self, inputs: dict[str, torch.Tensor], mode: str | None = None, tau: float | None = None
              ) -> tuple[torch.Tensor, np.ndarray | None, np.ndarray]:
        """``(logits, risk, flagged)`` of one pass; ``mode`` "detector" (default), "on" or "off"."""
        if mode is None:
            mode = "detector" if self.enabled else "off"
        return gated_forward(self.base, inputs, tap_layer=self.tap_layer, mode=mode,
                             detector=self.detector.module,
                             tau=self.tau if tau is None else tau, layers=self.lora)

    @torch.no_grad()
    def predict_with_extras(self, frame: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Probabilities plus ``risk`` and ``corrected`` (adapter on) per row."""
        logits, risk, flagged = gated_forward(
            self.base, self.encode(frame), tap_layer=self.tap_layer, mode="detector",
            detector=self.detector.module, tau=self.tau if self.enabled else math.inf,
            layers=self.lora)
        proba = torch.softmax(logits.float(), dim=-1).double().numpy()
        assert risk is not None
        return proba, {"risk": risk, "corrected": flagged}

    @property
    def default_tap_layer(self) -> str:
        """The detector's tap layer."""
        return self.tap_layer

    @property
    def default_lora_targets(self) -> list[str]:
        """The adapted layers."""
        return list(self.info.get("targets", []))

    def describe(self) -> dict[str, Any]:
        """Identity of the bundle and of its base."""
        d = super().describe()
        d.update({"base": self.base.describe(), "tau": self.tau, "adapter_enabled": self.enabled})
        return d


# -- helpers ------------------------------------------------------------------------


def _index(inputs: dict[str, torch.Tensor], ids: Any) -> dict[str, torch.Tensor]:
    return {k: v[ids] for k, v in inputs.items()}


def head_inputs(model: Model, inputs: dict[str, torch.Tensor], tap: str, detector: Any, batch: int,
                ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Base pass over all rows: head inputs ``z (N, D)``, risk ``(N,)``, probabilities ``(N, C)``."""
    zs, risks, probas = [], [], []
    n = len(next(iter(inputs.values())))
    for start in range(0, n, batch):
        part = _index(inputs, slice(start, start + batch))
        with model.capture_input(model.head_layer) as store:
            logits, risk, _ = gated_forward(model, part, tap_layer=tap, mode="detector",
                                            detector=detector, tau=math.inf)
        zs.append(store["in"].detach())
        risks.append(risk)
        probas.append(torch.softmax(logits.float(), -1).double().numpy())
    return torch.cat(zs), np.concatenate(risks), np.concatenate(probas)


def guard_metrics(pred: np.ndarray, y: np.ndarray, g: np.ndarray, n_classes: int, positive: int | None
                  ) -> dict[str, float]:
    """Accuracy, worst-group accuracy and equalized-odds difference of class-index predictions.

    ``g`` holds group codes (-1: unknown group, counted in accuracy only).
    """
    from fairfix.metrics import rates

    acc = float((pred == y).mean())
    known = g >= 0
    n_groups = int(g.max()) + 1 if known.any() else 0
    if n_groups == 0:
        return {"accuracy": acc, "worst_group_accuracy": float("nan"), "equalized_odds_difference": float("nan")}
    key = (g[known] * n_classes + y[known]) * n_classes + pred[known]
    counts = np.bincount(key, minlength=n_groups * n_classes * n_classes).reshape(n_groups, n_classes, n_classes)
    label_idx = [k for k in range(n_classes) if counts[:, k, :].sum() > 0]
    targets = [positive] if positive is not None else label_idx
    s = rates.summary_arrays(counts, targets, label_idx)
    return {"accuracy": acc, "worst_group_accuracy": float(s["worst_group_accuracy"]),
            "equalized_odds_difference": float(s["equalized_odds_difference"])}


def accuracy_change(pred: np.ndarray, base_pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Accuracy gain over the base on the same rows and its standard error.

    Per row ``d = [pred == y] - [base_pred == y]`` (-1, 0 or 1); the gain is ``mean(d)``
    and its standard error ``std(d, ddof=1) / sqrt(n)``: paired, so rows whose prediction
    did not change add no noise, and a setting that changes few rows is judged on them.
    """
    d = (pred == y).astype(np.float64) - (base_pred == y)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return float(d.mean()), se


def set_strength(module: torch.nn.Module, strength: float, alpha: float, rank: int) -> None:
    """Scale every LoRA update of ``module`` to ``strength`` times its trained size."""
    for layer in lora_layers(module):
        layer.scaling[ADAPTER] = strength * alpha / rank


def _lora_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if "lora_" in k}


# -- the training loop ----------------------------------------------------------------


def fit_fairnet(
    model: Model,
    detector: Any,
    train: dict[str, Any],
    val: dict[str, Any],
    config: CorrectConfig,
    *,
    progress: Callable[..., None] | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> tuple[CorrectedModel, dict[str, Any]]:
    """Train the adapter and choose (epoch, tau) under the no-loss guard.

    ``train`` / ``val``: ``{"inputs": encoded inputs, "y": class indices (N,),
    "minority": 1/0/-1 per row (-1 unknown), "group": group codes (N,) (-1 unknown)}``.

    Returns the corrected model and a record with the prototypes, the sweep and the choice.
    """
    tap = detector.layer
    dev_batch = 4096
    base = model
    z_tr, risk_tr, proba_tr = head_inputs(base, train["inputs"], tap, detector.module, dev_batch)
    _, risk_val, proba_val = head_inputs(base, val["inputs"], tap, detector.module, dev_batch)
    n_classes = len(model.classes)
    pos = model.positive_index
    y_tr = torch.as_tensor(train["y"])
    if train.get("minority") is None:  # mode none: the detector's flags stand for minority membership
        minority_tr = (risk_tr > detector.tau).astype(np.int64)
    else:
        minority_tr = np.asarray(train["minority"])
    # -- prototypes per (class, group) with the base frozen (group index: 0 majority, 1 minority)
    labeled = minority_tr >= 0
    protos, counts = cell_means(z_tr[torch.as_tensor(labeled)], y_tr[torch.as_tensor(labeled)],
                                torch.as_tensor(minority_tr[labeled]), n_classes, 2)
    overall = cell_means(z_tr, y_tr, torch.zeros(len(y_tr), dtype=torch.long), n_classes, 1)[0][:, 0]
    majority = torch.where(counts[:, 0:1] > 0, protos[:, 0], overall)  # (C, D)

    # -- which rows train the adapter
    flagged_tr = risk_tr > (config.tau if config.tau is not None else detector.tau)
    rows = np.flatnonzero(minority_tr == 1) if config.train_on == "minority" else np.flatnonzero(flagged_tr)
    if len(rows) == 0:
        raise errors.DataError("no training rows for the adapter (no minority / flagged rows)")
    y_rows = train["y"][rows]
    cls_count = np.bincount(y_rows, minlength=n_classes).astype(float)
    w_class = np.where(cls_count > 0, 1.0 / np.maximum(cls_count, 1), 0.0)
    weights_all = torch.zeros(len(train["y"]), dtype=torch.float32)
    weights_all[torch.as_tensor(rows)] = torch.as_tensor(w_class[y_rows], dtype=torch.float32)
    contrastive_all = torch.as_tensor(minority_tr == 1)  # triplet only on (known) minority rows

    # -- the adapter (peft LoRA on layers after the tap)
    from peft import LoraConfig, get_peft_model

    work = copy.deepcopy(base)
    targets = config.targets or work.default_lora_targets
    lcfg = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=targets, init_lora_weights=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        peft_model = get_peft_model(work.module, lcfg, adapter_name=ADAPTER)
    work.module = peft_model.base_model.model  # the same module object, now holding LoRA layers
    if not lora_layers(work.module):
        raise errors.UsageError(f"--targets {targets}: no linear layer of the model matched")
    params = [p for n, p in work.module.named_parameters() if "lora_" in n]
    for n, p in work.module.named_parameters():
        p.requires_grad_("lora_" in n)
    work.module.eval()  # base dropout off; only LoRA weights train

    y_val = val["y"]
    base_pred_val = proba_val.argmax(1)
    base_metrics = guard_metrics(base_pred_val, y_val, val["group"], n_classes, pos)
    sweep: list[dict[str, Any]] = []
    states: list[dict[str, torch.Tensor]] = []
    start_epoch = 0
    if resume and checkpoint is not None and (checkpoint / "state.json").is_file():
        start_epoch, sweep, states = _load_checkpoint(checkpoint, work.module)
    history = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + start_epoch)
        gen = torch.Generator().manual_seed(config.seed + start_epoch)
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        ids_all = torch.as_tensor(rows)
        for epoch in range(start_epoch, config.epochs):
            perm = ids_all[torch.randperm(len(ids_all), generator=gen)]
            total = 0.0
            for s in range(0, len(perm), config.batch_size):
                ids = perm[s : s + config.batch_size]  # row ids
                with work.capture_input(work.head_layer) as store:
                    logits = work.forward(_index(train["inputs"], ids))  # adapter on for these rows
                w = weights_all[ids]
                loss = logits.new_zeros(())
                cmask = contrastive_all[ids]
                if cmask.any():
                    loss = loss + triplet_loss(store["in"][cmask], y_tr[ids][cmask], majority,
                                               margin=config.margin, kind=config.distance, weights=w[cmask])
                if config.ce_weight > 0:
                    ce = F.cross_entropy(logits, y_tr[ids], reduction="none")
                    loss = loss + config.ce_weight * (ce * w).sum() / w.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(ids)
            # -- validation: adapter on for every row at each strength; gating by tau comes after
            taus = [config.tau] if config.tau is not None else list(TAUS)
            for strength in config.strengths:
                set_strength(work.module, strength, config.alpha, config.rank)
                with torch.no_grad():
                    on = [work.forward(_index(val["inputs"], slice(s, s + dev_batch))).argmax(1).numpy()
                          for s in range(0, len(y_val), dev_batch)]
                adapted = np.concatenate(on)
                for tau in taus:
                    flag = risk_val > tau
                    pred = np.where(flag, adapted, base_pred_val)
                    m = guard_metrics(pred, y_val, val["group"], n_classes, pos)
                    gain, se = accuracy_change(pred, base_pred_val, y_val)
                    sweep.append({"epoch": epoch + 1, "strength": strength, "tau": tau,
                                  "activation_rate": float(flag.mean()), **m,
                                  "accuracy_gain": gain, "accuracy_gain_se": se})
            set_strength(work.module, 1.0, config.alpha, config.rank)
            states.append(_lora_state(work.module))
            history.append(total / len(perm))
            if checkpoint is not None:
                _save_checkpoint(checkpoint, epoch + 1, sweep, states[-1], config)
            if progress is not None:
                progress("adapter", epoch + 1, config.epochs, {"loss": total / len(perm)})

    floor = base_metrics["accuracy"] - config.max_accuracy_drop - 1e-12
    for r in sweep:  # no loss beyond max_accuracy_drop, with guard_se standard errors to spare
        if "accuracy_gain" not in r:  # a sweep resumed from a checkpoint written before guard_se
            r["accuracy_gain"], r["accuracy_gain_se"] = r["accuracy"] - base_metrics["accuracy"], 0.0
        r["passes_guard"] = bool(r["accuracy"] >= floor and r["accuracy_gain"] - config.guard_se
                                 * r["accuracy_gain_se"] >= -config.max_accuracy_drop - 1e-12)
    passing = [r for r in sweep if r["passes_guard"]
               and r["worst_group_accuracy"] > base_metrics["worst_group_accuracy"] + 1e-12]
    choice = max(passing, key=lambda r: (r["worst_group_accuracy"], r["accuracy"], -r["activation_rate"]),
                 default=None)
    enabled = choice is not None
    if enabled:
        work.module.load_state_dict(states[choice["epoch"] - 1], strict=False)
        set_strength(work.module, choice["strength"], config.alpha, config.rank)
        peft_model.peft_config[ADAPTER].lora_alpha = config.alpha * choice["strength"]
    else:  # ship a no-op adapter (B = 0), so that even a forced pass cannot apply a rejected update
        work.module.load_state_dict(states[-1], strict=False)
        with torch.no_grad():
            for layer in lora_layers(work.module):
                layer.lora_B[ADAPTER].weight.zero_()
    corrected = CorrectedModel(work, peft_model, detector, tau=choice["tau"] if enabled else None,
                               enabled=enabled, tap_layer=tap,
                               prototypes={"cells": protos, "counts": counts, "majority": majority},
                               info={"targets": list(targets)})
    record = {
        "base_validation": base_metrics,
        "chosen": choice,
        "adapter_enabled": enabled,
        "guard": {"max_accuracy_drop": config.max_accuracy_drop, "guard_se": config.guard_se,
                  "floor": floor,
                  "reason": None if enabled else
                  "no (epoch, strength, tau) raised worst-group accuracy with an accuracy change - "
                  f"{config.guard_se:g} standard errors >= -max_accuracy_drop"},
        "sweep": sweep,
        "train_rows": int(len(rows)),
        "loss_history": history,
        "targets": list(targets),
        "config": asdict(config),
    }
    return corrected, record


def _save_checkpoint(path: Path, epoch: int, sweep: list, state: dict[str, torch.Tensor],
                     config: CorrectConfig) -> None:
    """After each completed epoch: its adapter weights and the sweep so far (atomic renames)."""
    import os

    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".epoch_{epoch}.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path / f"epoch_{epoch}.safetensors")
    meta = {"epoch": epoch, "sweep": sweep, "config": asdict(config)}
    (path / ".state.json.tmp").write_text(json.dumps(meta))
    os.replace(path / ".state.json.tmp", path / "state.json")


def _load_checkpoint(path: Path, module: torch.nn.Module) -> tuple[int, list, list]:
    from fairfix.models.base import load_safetensors

    meta = json.loads((path / "state.json").read_text())
    states = [load_safetensors(path / f"epoch_{e}.safetensors") for e in range(1, meta["epoch"] + 1)]
    module.load_state_dict(states[-1], strict=False)
    return int(meta["epoch"]), list(meta["sweep"]), states


def minority_codes(values: Sequence[Any], minority: Sequence[Any]) -> np.ndarray:
    """1 for minority values, 0 for others, -1 for missing."""
    mset = {str(m) for m in minority}
    return np.array([-1 if v is None else int(str(v) in mset) for v in values], dtype=np.int64)


def group_codes(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Integer codes of group values (-1 for missing) and the distinct values."""
    distinct = sorted({str(v) for v in values if v is not None})
    index = {v: i for i, v in enumerate(distinct)}
    return np.array([-1 if v is None else index[str(v)] for v in values], dtype=np.int64), distinct
