"""FairNet: contrastive conditional LoRA with a no-loss guard (DESIGN.md section 1, steps 2-5).

``fit_fairnet`` is the one training loop for every label mode: the mode only
decides which rows are "minority" (true labels, the labeled subset, or the
detector's flags) and so which rows and prototypes feed the loss.
"""

from __future__ import annotations

import copy
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
from fairfix.correct.checkpoint import load_checkpoint, run_key, save_checkpoint
from fairfix.correct.gating import ADAPTER, gated_forward, lora_layers
from fairfix.correct.loss import hinge
from fairfix.correct.plan import (
    HINGE_CLOSED,
    accuracy_change,
    cell_weights,
    correction_plan,
    guard_metrics,
    why_off,
)
from fairfix.correct.prototypes import cell_means
from fairfix.correct.stacking import Stage, stacked
from fairfix.models.base import INPUT, Model

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
    #: Triplet margin, on L2-normalised representations when ``normalize`` (distances in [0, 2]).
    margin: float = 0.5
    distance: str = "euclidean"
    normalize: bool = True
    #: "auto": correct every group that holds an under-served (group, class) cell (the minority,
    #: and the rest when a class is served worse there than in the minority); "minority": the
    #: minority alone, as the paper.
    groups: str = "auto"
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
            "groups": self.groups in ("auto", "minority"),
            "tau": self.tau is None or 0 <= self.tau <= 1,
            "strengths": len(self.strengths) >= 1 and all(0 < x <= 1 for x in self.strengths),
        }
        errors.check_options("correction", self, checks)


class CorrectedModel(Model):
    """A base model with a FairNet adapter switched on per row by the bias detector."""

    kind = "fairnet_bundle"
    extra_outputs = {"risk": "double", "corrected": "boolean"}

    def __init__(self, base: Model, peft_model: Any, detector: Any, *, tau: float | None, enabled: bool,
                 tap_layer: str, gate: str = "detector", prototypes: dict[str, torch.Tensor] | None = None,
                 info: dict[str, Any] | None = None, **kw: Any):
        super().__init__(base.module, base.classes, base.positive, base.input_columns, **kw)
        self.base = base
        self.peft_model = peft_model
        self.detector = detector  # fairfix.detect.Detector
        self.tau = tau
        self.enabled = enabled
        self.tap_layer = tap_layer
        #: "detector": the adapter is on where risk > tau; "all": on for every row (every group
        #: holds an under-served cell, and the guard chose to correct them all).
        self.gate = gate
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
            mode = ("on" if self.gate == "all" else "detector") if self.enabled else "off"
        if tau is None:  # no tau: only a disabled adapter has none, and mode "off" reads none
            tau = self.tau if self.tau is not None else math.inf
        return gated_forward(self.base, inputs, tap_layer=self.tap_layer, mode=mode,
                             detector=self.detector.module, tau=tau, layers=self.lora)

    @torch.no_grad()
    def predict_with_extras(self, frame: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Probabilities plus ``risk`` and ``corrected`` (adapter on) per row."""
        if not self.enabled:
            tau = math.inf
        elif self.gate == "all":
            tau = -math.inf  # every row; the risk column still reports the detector's score
        else:
            tau = self.tau if self.tau is not None else math.inf
        logits, risk, flagged = gated_forward(
            self.base, self.encode(frame), tap_layer=self.tap_layer, mode="detector",
            detector=self.detector.module, tau=tau, layers=self.lora)
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
        d.update({"base": self.base.describe(), "tau": self.tau, "gate": self.gate,
                  "adapter_enabled": self.enabled})
        return d


# -- helpers ------------------------------------------------------------------------


def _index(inputs: dict[str, torch.Tensor], ids: Any) -> dict[str, torch.Tensor]:
    return {k: v[ids] for k, v in inputs.items()}


def head_inputs(model: Model, inputs: dict[str, torch.Tensor], tap: str, detector: Any, batch: int,
                prior: Sequence[Any] = ()) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Base pass over all rows: head inputs ``z (N, D)``, risk ``(N,)``, probabilities ``(N, C)``.

    ``prior``: the stages (:class:`~fairfix.correct.stacking.Stage`) of the attributes corrected
    before, gated as at inference: the pass is then the model corrected so far.
    """
    from fairfix.correct.stacking import stacked_forward

    zs, risks, probas = [], [], []
    n = len(next(iter(inputs.values())))
    for start in range(0, n, batch):
        part = _index(inputs, slice(start, start + batch))
        with model.capture_input(model.head_layer) as store:
            if prior:
                logits, rs, _ = stacked_forward(model, part, [*prior, Stage(None, tap, "detector", detector,
                                                                            math.inf)])
                risk = rs[-1]
            else:
                logits, risk, _ = gated_forward(model, part, tap_layer=tap, mode="detector",
                                                detector=detector, tau=math.inf)
        zs.append(store["in"].detach())
        assert risk is not None  # mode "detector" always scores the rows
        risks.append(risk)
        probas.append(torch.softmax(logits.float(), -1).double().numpy())
    return torch.cat(zs), np.concatenate(risks), np.concatenate(probas)


def layers_after(model: Model, names: Sequence[str], tap: str) -> list[str]:
    """``names`` that come after the ``tap`` layer in the module's registration order.

    All of them when the tap is the input or not among the module's layers: a detector
    tapped late keeps the default targets that its gate can reach.
    """
    order = [n for n, _ in model.module.named_modules()]
    if tap == INPUT or tap not in order:
        return list(names)
    at = order.index(tap)
    after = [n for n in names if n in order and order.index(n) > at and not n.startswith(tap + ".")]
    return after or list(names)


def set_strength(module: torch.nn.Module, strength: float, alpha: float, rank: int, adapter: str = ADAPTER) -> None:
    """Scale every LoRA update of ``adapter`` in ``module`` to ``strength`` times its trained size."""
    layer: Any
    for layer in lora_layers(module):
        if adapter in layer.scaling:
            layer.scaling[adapter] = strength * alpha / rank


def _lora_state(module: torch.nn.Module, adapter: str = ADAPTER) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if "lora_" in k and f".{adapter}." in k}


# -- the anchors' hinge ---------------------------------------------------------------


def open_share(z: torch.Tensor, y: torch.Tensor, reference: torch.Tensor, config: CorrectConfig) -> float:
    """Share of rows whose triplet hinge is open (0 for no rows)."""
    if len(z) == 0:
        return 0.0
    with torch.no_grad():
        h = hinge(z, y, reference, margin=config.margin, kind=config.distance, normalize=config.normalize)
    return float((h > 0).double().mean())


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
    resume: bool | str = False,
    adapter: str = ADAPTER,
    prior: Sequence[Any] = (),
    peft_prior: Any = None,
) -> tuple[CorrectedModel, dict[str, Any]]:
    """Train the adapter and choose (epoch, strength, gate) under the no-loss guard.

    Progressive correction (:mod:`fairfix.correct.progressive`) names the adapter
    (``adapter``) and passes the attributes corrected before: ``prior`` their gates
    (:class:`~fairfix.correct.stacking.Stage`, as at inference) and ``peft_prior`` the
    PeftModel of ``model`` that holds their adapters; the new adapter is added beside
    them and trained on the model they correct.  ``val["guard_groups"]`` (``{name: group
    codes}``) adds attributes whose validation worst-group accuracy must not drop.

    ``resume``: True continues the interrupted run in ``checkpoint`` (exit 2 when it was
    written for other data, options, base or detector); ``"if-matching"`` continues it only
    when it matches and trains from scratch otherwise (``fairfix run``).

    ``train`` / ``val``: ``{"inputs": encoded inputs, "y": class indices (N,),
    "minority": 1/0/-1 per row (-1 unknown; None: no labels at all), "group": group
    codes (N,) (-1 unknown; validation)}``.  Rows without a group label count as the
    detector says (flagged: minority).

    Returns the corrected model and a record with the plan, the prototypes, the sweep
    and the choice.
    """
    tap = detector.layer
    dev_batch = 4096
    base = model
    z_tr, risk_tr, proba_tr = head_inputs(base, train["inputs"], tap, detector.module, dev_batch, prior)
    _, risk_val, proba_val = head_inputs(base, val["inputs"], tap, detector.module, dev_batch, prior)
    stackwise = bool(prior) or adapter != ADAPTER  # several named adapters: the stacked pass
    n_classes = len(model.classes)
    pos = model.positive_index
    y_np = np.asarray(train["y"])
    y_tr = torch.as_tensor(y_np)
    flagged_det = risk_tr > detector.tau
    # -- group membership (1 minority, 0 rest): the label where known, the detector's call elsewhere
    if train.get("minority") is None:
        m_tr = flagged_det.astype(np.int64)
    else:
        known = np.asarray(train["minority"])
        m_tr = np.where(known >= 0, known, flagged_det.astype(np.int64))
    y_val = np.asarray(val["y"])
    base_pred_val = proba_val.argmax(1)
    m_val = np.asarray(val.get("minority") if val.get("minority") is not None else np.full(len(y_val), -1))
    count_train = np.stack([np.bincount(y_np[m_tr == m], minlength=n_classes) for m in (0, 1)])
    plan = correction_plan(m_val, y_val, base_pred_val, n_classes, config.groups, count_train)

    # -- prototypes per (class, group) with the base frozen, and the reference per class
    z_proto = F.normalize(z_tr, dim=-1) if config.normalize and config.distance == "euclidean" else z_tr
    protos, counts = cell_means(z_proto, y_tr, torch.as_tensor(m_tr), n_classes, 2)
    overall = cell_means(z_proto, y_tr, torch.zeros(len(y_tr), dtype=torch.long), n_classes, 1)[0][:, 0]
    ref_idx = torch.as_tensor(plan["reference"])
    reference = protos[torch.arange(n_classes), ref_idx]  # (C, D)
    reference = torch.where(counts[torch.arange(n_classes), ref_idx].unsqueeze(1) > 0, reference, overall)

    base_metrics = guard_metrics(base_pred_val, y_val, val["group"], n_classes, pos)
    guard_groups = val.get("guard_groups") or {}
    base_others = {name: guard_metrics(base_pred_val, y_val, codes, n_classes, pos)["worst_group_accuracy"]
                   for name, codes in guard_groups.items()}
    # what a checkpoint is written for (a digest of every input row: only when checkpointing)
    key = run_key(base, detector, train, val, config) if checkpoint is not None else {}

    def train_plan(groups: str, checkpoint: Path | None, offset: int, total_epochs: int) -> dict[str, Any]:
        """Train one adapter for the plan ``groups`` ("all" or "minority"); its sweep on validation."""
        # -- which rows train the adapter (the anchors), and their weights
        if groups == "all":
            rows = np.arange(len(y_np))
            w_rows = cell_weights(m_tr * n_classes + y_np, 2 * n_classes)  # every (group, class) cell alike
        else:
            if config.train_on == "minority":
                rows = np.flatnonzero(m_tr == 1)
            else:
                rows = np.flatnonzero(risk_tr > (config.tau if config.tau is not None else detector.tau))
            w_rows = cell_weights(y_np[rows], n_classes) if len(rows) else np.zeros(0)  # class-balanced
        if len(rows) == 0:
            raise errors.DataError("no training rows for the adapter (no minority / flagged rows)")
        weights_all = torch.zeros(len(y_np), dtype=torch.float32)
        weights_all[torch.as_tensor(rows)] = torch.as_tensor(w_rows, dtype=torch.float32)
        # the triplet on every anchor of a corrected group (all rows, or the minority's)
        contrastive_all = torch.as_tensor(np.ones(len(y_np), bool) if groups == "all" else m_tr == 1)
        anchors = rows[contrastive_all.numpy()[rows]]
        hinge_start = open_share(z_tr[torch.as_tensor(anchors)], y_tr[torch.as_tensor(anchors)], reference, config)

        # -- the adapter (peft LoRA on layers after the tap)
        from peft import LoraConfig, get_peft_model

        if peft_prior is None:
            work = copy.deepcopy(base)
        else:  # one copy of both, so that work.module stays the PeftModel's module
            work, peft_model = copy.deepcopy((base, peft_prior))
        targets = config.targets or layers_after(work, work.default_lora_targets, tap)
        # peft's annotation says int; it scales by any float (alpha / rank), and --alpha takes one.
        lcfg = LoraConfig(r=config.rank, lora_alpha=config.alpha,  # type: ignore[arg-type]
                          lora_dropout=config.dropout,
                          target_modules=targets, init_lora_weights=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            if peft_prior is None:
                peft_model = get_peft_model(work.module, lcfg, adapter_name=adapter)
            else:
                peft_model.add_adapter(adapter, lcfg)
        work.module = peft_model.base_model.model  # the same module object, now holding LoRA layers
        if not any(adapter in getattr(layer, "lora_A", {}) for layer in lora_layers(work.module)):
            raise errors.UsageError(f"--targets {targets}: no layer of the model matched")
        mine = f".{adapter}."
        params = [p for n, p in work.module.named_parameters() if "lora_" in n and mine in n]
        for n, p in work.module.named_parameters():
            p.requires_grad_("lora_" in n and mine in n)
        stages_on = [*prior, Stage(adapter, tap, "on")]  # the stacked pass: this adapter on for every row

        def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
            if not stackwise:
                return work.forward(inputs)
            with stacked(work, stages_on, inputs.get("attention_mask")):
                return work.forward(inputs)
        work.module.eval()  # base dropout off; only LoRA weights train

        sweep: list[dict[str, Any]] = []
        states: list[dict[str, torch.Tensor]] = []
        start_epoch = 0
        history: list[float] = []
        hinge_history: list[float] = []
        resumed: dict[str, Any] | None = None
        if resume and checkpoint is not None and (checkpoint / "state.json").is_file():
            resumed = load_checkpoint(checkpoint, work.module, key, strict=resume != "if-matching")
        if resumed is not None:
            start_epoch = min(resumed["epoch"], config.epochs)  # a shorter run keeps only its own epochs
            sweep = [r for r in resumed["sweep"] if r["epoch"] <= start_epoch]
            states = resumed["states"][:start_epoch]
            history, hinge_history = resumed["history"][:start_epoch], resumed["hinge_history"][:start_epoch]
            work.module.load_state_dict(states[-1], strict=False)
        gates: list[tuple[str, float | None]] = [("detector", t) for t in
                                                 ([config.tau] if config.tau is not None else list(TAUS))]
        if groups == "all":
            gates.append(("all", None))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            gen = torch.Generator().manual_seed(config.seed)
            opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
            if resumed is not None and start_epoch == resumed["epoch"]:  # continue exactly where it stopped
                opt.load_state_dict(resumed["optimizer"])
                gen.set_state(resumed["rng"]["shuffle"])
                torch.set_rng_state(resumed["rng"]["torch"])
            ids_all = torch.as_tensor(rows)
            for epoch in range(start_epoch, config.epochs):
                perm = ids_all[torch.randperm(len(ids_all), generator=gen)]
                total, n_open, n_anchor = 0.0, 0, 0
                for s in range(0, len(perm), config.batch_size):
                    ids = perm[s : s + config.batch_size]  # row ids
                    with work.capture_input(work.head_layer) as store:
                        logits = forward(_index(train["inputs"], ids))  # adapter on for these rows
                    w = weights_all[ids]
                    loss = logits.new_zeros(())
                    cmask = contrastive_all[ids]
                    if cmask.any():
                        h = hinge(store["in"][cmask], y_tr[ids][cmask], reference, margin=config.margin,
                                  kind=config.distance, normalize=config.normalize)
                        wc = w[cmask]
                        loss = loss + (F.relu(h) * wc).sum() / wc.sum()
                        n_open += int((h.detach() > 0).sum())
                        n_anchor += int(cmask.sum())
                    if config.ce_weight > 0:
                        ce = F.cross_entropy(logits, y_tr[ids], reduction="none")
                        loss = loss + config.ce_weight * (ce * w).sum() / w.sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(ids)
                # -- validation: adapter on for every row at each strength; the gate comes after
                for strength in config.strengths:
                    set_strength(work.module, strength, config.alpha, config.rank, adapter)
                    with torch.no_grad():
                        on = [forward(_index(val["inputs"], slice(s, s + dev_batch))).argmax(1).numpy()
                              for s in range(0, len(y_val), dev_batch)]
                    adapted = np.concatenate(on)
                    for gate, tau in gates:
                        flag = np.ones(len(y_val), bool) if gate == "all" else risk_val > tau
                        pred = np.where(flag, adapted, base_pred_val)
                        m = guard_metrics(pred, y_val, val["group"], n_classes, pos)
                        gain, se = accuracy_change(pred, base_pred_val, y_val)
                        sweep.append({"epoch": epoch + 1, "strength": strength, "gate": gate, "tau": tau,
                                      "activation_rate": float(flag.mean()), **m,
                                      "accuracy_gain": gain, "accuracy_gain_se": se})
                        if guard_groups:
                            sweep[-1]["attribute_worst_group_accuracy"] = {
                                name: guard_metrics(pred, y_val, codes, n_classes, pos)["worst_group_accuracy"]
                                for name, codes in guard_groups.items()}
                set_strength(work.module, 1.0, config.alpha, config.rank, adapter)
                states.append(_lora_state(work.module, adapter))
                history.append(total / len(perm))
                hinge_history.append(n_open / n_anchor if n_anchor else 0.0)
                if checkpoint is not None:
                    save_checkpoint(checkpoint, epoch + 1, sweep, states[-1], config, key=key, opt=opt,
                                     rng={"shuffle": gen.get_state(), "torch": torch.get_rng_state()},
                                     history=history, hinge_history=hinge_history)
                if progress is not None:
                    progress("adapter", offset + epoch + 1, total_epochs,
                             {"loss": total / len(perm), "open": hinge_history[-1]})

        for r in sweep:
            r["groups"] = groups
        return {"work": work, "peft_model": peft_model, "targets": targets, "sweep": sweep, "states": states,
                "history": history, "hinge_history": hinge_history, "rows": rows, "anchors": anchors,
                "hinge_start": hinge_start}

    # the minority alone is always a candidate: when every group holds an under-served cell, an adapter
    # for all of them is trained too, and the guard chooses between them on validation
    plans = ["all", "minority"] if plan["groups"] == "all" else ["minority"]
    fits = {}
    for i, groups in enumerate(plans):
        sub = checkpoint / groups if checkpoint is not None else None  # one folder per plan
        fits[groups] = train_plan(groups, sub, i * config.epochs, len(plans) * config.epochs)
    sweep = [r for groups in plans for r in fits[groups]["sweep"]]

    floor = base_metrics["accuracy"] - config.max_accuracy_drop - 1e-12
    for r in sweep:  # no loss beyond max_accuracy_drop, with guard_se standard errors to spare
        if "accuracy_gain" not in r:  # a sweep resumed from a checkpoint written before guard_se
            r["accuracy_gain"], r["accuracy_gain_se"] = r["accuracy"] - base_metrics["accuracy"], 0.0
        r.setdefault("gate", "detector")
        r["passes_guard"] = bool(r["accuracy"] >= floor and r["accuracy_gain"] - config.guard_se
                                 * r["accuracy_gain_se"] >= -config.max_accuracy_drop - 1e-12)
        if guard_groups:  # no other attribute's worst cell may drop below its value before this step
            r["passes_guard"] = r["passes_guard"] and all(
                not (base_others[name] > r["attribute_worst_group_accuracy"][name] + 1e-12)
                for name in guard_groups)
    passing = [r for r in sweep if r["passes_guard"]
               and r["worst_group_accuracy"] > base_metrics["worst_group_accuracy"] + 1e-12]
    choice = max(passing, key=lambda r: (r["worst_group_accuracy"], r["accuracy"], -r["activation_rate"]),
                 default=None)
    enabled = choice is not None
    fit = fits[choice["groups"] if choice is not None else plans[-1]]
    work, peft_model, targets, states = fit["work"], fit["peft_model"], fit["targets"], fit["states"]
    anchors, hinge_start = fit["anchors"], fit["hinge_start"]
    hinge_history, history = fit["hinge_history"], fit["history"]
    rows = fit["rows"]
    if choice is not None:
        work.module.load_state_dict(states[choice["epoch"] - 1], strict=False)
        set_strength(work.module, choice["strength"], config.alpha, config.rank, adapter)
        peft_model.peft_config[adapter].lora_alpha = config.alpha * choice["strength"]
    else:  # ship a no-op adapter (B = 0), so that even a forced pass cannot apply a rejected update
        work.module.load_state_dict(states[-1], strict=False)
        with torch.no_grad():
            for lora in lora_layers(work.module):
                b: Any = lora.lora_B
                if adapter in b:
                    b[adapter].weight.zero_()
    gate = choice["gate"] if choice is not None else "detector"
    reasons = why_off(hinge_start, detector, plan, config) if not enabled else []
    if not enabled and guard_groups:  # settings that helped this attribute but lowered another's worst cell
        blocked = sorted({name for r in sweep if r["accuracy"] >= floor
                          and r["worst_group_accuracy"] > base_metrics["worst_group_accuracy"] + 1e-12
                          for name in guard_groups
                          if base_others[name] > r["attribute_worst_group_accuracy"][name] + 1e-12})
        if blocked:
            reasons.insert(0, f"every setting that raised this attribute's worst cell lowered the worst cell of "
                              f"{', '.join(map(repr, blocked))} on validation")
    corrected_plan = choice["groups"] if choice is not None else plans[-1]
    correction = {
        "groups": corrected_plan,
        "candidates": plans,
        "corrected_groups": [*map(str, detector.minority), *(["the other groups"] if corrected_plan == "all" else [])],
        "minority": list(detector.minority),
        "reference_group": ["minority" if r else "rest" for r in plan["reference"]],
        "cell_accuracy_validation": plan["cell_accuracy_validation"],
        "anchors": int(len(anchors)),
        "hinge_open_share": hinge_start,
        "hinge_open_history": hinge_history,
        "margin": config.margin, "distance": config.distance, "normalize": config.normalize,
        "warning": (f"the contrastive hinge is open for {hinge_start:.1%} of the {len(anchors)} anchors: "
                    "the correction has little to act on (the base already separates the corrected rows' "
                    "classes at this margin)") if hinge_start < HINGE_CLOSED else None,
    }
    corrected = CorrectedModel(work, peft_model, detector, tau=choice["tau"] if choice is not None else None,
                               enabled=enabled, tap_layer=tap, gate=gate,
                               prototypes={"cells": protos, "counts": counts, "reference": reference},
                               info={"targets": list(targets)})
    record = {
        "base_validation": base_metrics,
        "chosen": choice,
        "adapter_enabled": enabled,
        "gate": gate,
        "correction": correction,
        "guard": {"max_accuracy_drop": config.max_accuracy_drop, "guard_se": config.guard_se,
                  "floor": floor, "reason": "; ".join(reasons) if reasons else None, "reasons": reasons,
                  **({"attribute_worst_group_accuracy_before": base_others} if guard_groups else {})},
        "sweep": sweep,
        "train_rows": int(len(rows)),
        "loss_history": history,
        "targets": list(targets),
        "config": asdict(config),
    }
    return corrected, record


def minority_codes(values: Sequence[Any], minority: Sequence[Any]) -> np.ndarray:
    """1 for minority values, 0 for others, -1 for missing."""
    mset = {str(m) for m in minority}
    return np.array([-1 if v is None else int(str(v) in mset) for v in values], dtype=np.int64)


def group_codes(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Integer codes of group values (-1 for missing) and the distinct values."""
    distinct = sorted({str(v) for v in values if v is not None})
    index = {v: i for i, v in enumerate(distinct)}
    return np.array([-1 if v is None else index[str(v)] for v in values], dtype=np.int64), distinct
