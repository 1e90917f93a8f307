"""FairNet: contrastive conditional LoRA with a no-loss guard (DESIGN.md section 1, steps 2-5).

``fit_fairnet`` is the one training loop for every label mode: the mode only
decides which rows are "minority" (true labels, the labeled subset, or the
detector's flags) and so which rows and prototypes feed the loss.
"""

from __future__ import annotations

import copy
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fairfix import errors
from fairfix.correct import select
from fairfix.correct.checkpoint import check_checkpoint, run_key
from fairfix.correct.config import STRENGTHS, CorrectConfig
from fairfix.correct.gating import ADAPTER, gated_forward, lora_layers
from fairfix.correct.loop import Rows, eval_steps, train_steps
from fairfix.correct.loss import hinge
from fairfix.correct.plan import HINGE_CLOSED, correction_plan, guard_metrics
from fairfix.correct.prefix import prefix_cache
from fairfix.correct.prototypes import cell_means
from fairfix.correct.stacking import Stage, stacked
from fairfix.models.base import INPUT, Model

TAUS = (*(round(float(t), 2) for t in np.linspace(0.05, 0.95, 19)), 0.97, 0.99)
#: Rows per forward pass when only predicting (the base pass, the held-out rows).
EVAL_BATCH = 4096
#: The key of each row's position in the table, in the inputs of a run with a prefix cache.
ROW = "__fairfix_row__"
__all__ = ["STRENGTHS", "TAUS", "CorrectConfig", "CorrectedModel", "fit_fairnet"]


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


# -- the correction ------------------------------------------------------------------


def _adapter(base: Model, tap: str, config: CorrectConfig, adapter: str, peft_prior: Any, prior: Sequence[Any]
             ) -> tuple[Model, Any, list[str], list[nn.Parameter], Callable[..., torch.Tensor]]:
    """A copy of ``base`` with a fresh peft LoRA adapter on the layers after ``tap``.

    Returns the copy, its PeftModel, the adapted layers, the adapter's parameters (the only
    ones that train) and the forward with the adapter on for every row.
    """
    from peft import LoraConfig, get_peft_model

    if peft_prior is None:
        work = copy.deepcopy(base)
    else:  # one copy of both, so that work.module stays the PeftModel's module
        work, peft_model = copy.deepcopy((base, peft_prior))
    targets = config.targets or layers_after(work, work.default_lora_targets, tap)
    order = [name for name, _ in work.module.named_modules()]
    if tap != INPUT and tap in order:  # the gate decides at the tap: an adapted layer below it would run first
        early = [t for t in targets if t in order and (order.index(t) <= order.index(tap) or t.startswith(tap + "."))]
        if early:
            raise errors.UsageError(
                f"the detector reads layer {tap!r} and the adapter would sit on {', '.join(map(repr, early))}, which "
                f"runs before the gate decides; fit the detector on an earlier layer (fairfix detect --layer "
                f"{INPUT}) or pass --targets with layers after {tap!r}")
    # peft's annotation says int; it scales by any float (alpha / rank), and --alpha takes one.
    lcfg = LoraConfig(r=config.rank, lora_alpha=config.alpha,  # type: ignore[arg-type]
                      lora_dropout=config.dropout, target_modules=targets, init_lora_weights=True)
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
    work.module.eval()  # base dropout off; only LoRA weights train
    stackwise = bool(prior) or adapter != ADAPTER  # several named adapters: the stacked pass
    stages_on = [*prior, Stage(adapter, tap, "on")]  # this adapter on for every row

    def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if not stackwise:
            return work.forward(inputs)
        with stacked(work, stages_on, inputs.get("attention_mask")):
            return work.forward(inputs)

    return work, peft_model, list(targets), params, forward


def _plan_rows(plan: str, ids: np.ndarray, m: np.ndarray, y: np.ndarray, risk: np.ndarray, n_classes: int,
               config: CorrectConfig, detector_tau: float) -> Rows:
    """The rows that train the adapter of ``plan`` among ``ids``, their cells and anchors.

    "all": every row, each (group, class) cell alike, every row an anchor; "minority": the
    detector's flagged rows (or the minority's, ``train_on``), class-balanced, the minority's
    rows anchors (none flagged: no rows, and that adapter stays the base).
    """
    if plan == "all":
        return Rows(ids, m[ids] * n_classes + y[ids], np.ones(len(ids), bool))
    if config.train_on == "minority":
        rows = ids[m[ids] == 1]
    else:
        rows = ids[risk[ids] > (config.tau if config.tau is not None else detector_tau)]
    return Rows(rows, y[rows], m[rows] == 1)  # may be empty: that adapter stays a no-op


def _reference(z: torch.Tensor, y: torch.Tensor, m: torch.Tensor, plan: dict[str, Any], n_classes: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prototypes per (class, group) of ``z``, their counts, and the reference prototype per class.

    The reference of class c is the plan's reference group's prototype, or the class mean where
    that cell is empty.
    """
    protos, counts = cell_means(z, y, m, n_classes, 2)
    overall = cell_means(z, y, torch.zeros(len(y), dtype=torch.long), n_classes, 1)[0][:, 0]
    ref_idx = torch.as_tensor(plan["reference"])
    reference = protos[torch.arange(n_classes), ref_idx]  # (C, D)
    reference = torch.where(counts[torch.arange(n_classes), ref_idx].unsqueeze(1) > 0, reference, overall)
    return protos, counts, reference


def fit_fairnet(
    model: Model,
    detector: Any,
    data: dict[str, Any],
    config: CorrectConfig,
    *,
    split: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Callable[..., None] | None = None,
    checkpoint: Path | None = None,
    resume: bool | str = False,
    adapter: str = ADAPTER,
    prior: Sequence[Any] = (),
    peft_prior: Any = None,
) -> tuple[CorrectedModel, dict[str, Any]]:
    """Train the adapter and choose (budget, strength, gate) under the no-loss guard.

    ``data``: ``{"inputs": encoded inputs, "y": class indices (N,), "minority": 1/0/-1 per
    row for training (-1 unknown: the detector's flag stands in; None: no labels at all),
    "group": group codes the guard reads (-1 unknown), or None: no group label is read at
    all (mode none), "pseudo": 1/0/NaN per row (optional, mode none: the detector's
    pseudo-labels; NaN or absent: its flags), "fill_group": (code if flagged, code if not)
    (optional, partial labels: rows with an unknown group get the detector's group in the
    guard's cells), "oof_risk": parts -> risk (optional, cross-fitting: the detector's risk of
    every row from a detector that did not fit it; the guard's gates read it), "guard_groups":
    {name: codes} (optional)}``.

    Without group labels (``group`` None) the guard's cells are (class, pseudo-group), the
    pseudo-group being the detector's pseudo-label: its worst-group figure is the worst
    pseudo-cell's, and the record says so (``evidence["groups"]``).  Pseudo-groups are found
    within each class, so the rest of a class is never the worse-served cell: the adapter for
    every row (cell-balanced, gate "all") is always a candidate beside the gated one.

    The guard's evidence: ``config.folds`` cross-fitted folds (every row judged by adapters
    that did not train on it; the shipped adapter is then trained on every row for the
    chosen budget), or ``split = (train ids, held-out ids)`` for a plain split (the shipped
    adapter is the split's own, trained on its training rows).  Progressive correction
    (:mod:`fairfix.correct.progressive`) names the adapter and passes the attributes
    corrected before: ``prior`` their gates and ``peft_prior`` the PeftModel holding them;
    ``guard_groups`` are attributes whose worst cell must not drop.

    ``resume``: True reads the units of an interrupted run from ``checkpoint`` (exit 2 when
    it was written for other data, options, base or detector); ``"if-matching"`` reads them
    only when they match (``fairfix run``).  Returns the corrected model and a record with
    the plan, the prototypes, the evidence, the sweep and the choice.
    """
    from fairfix.correct.crossfit import fold_rows, pooled

    tap = detector.layer
    n_classes, pos = len(model.classes), model.positive_index
    z, risk, proba = head_inputs(model, data["inputs"], tap, detector.module, EVAL_BATCH, prior)
    base_pred = proba.argmax(1)
    y = np.asarray(data["y"])
    n = len(y)
    y_t = torch.as_tensor(y)
    flagged = (risk > detector.tau).astype(np.int64)
    g, m, groups_read = guard_cells(data, flagged)
    guard_groups = data.get("guard_groups") or {}
    strata = g * n_classes + y
    parts = [split] if split is not None else fold_rows(strata, config.folds, config.seed)
    evidence = np.sort(split[1]) if split is not None else np.arange(n)
    fit_ids = np.sort(split[0]) if split is not None else np.arange(n)
    count_fit = np.stack([np.bincount(y[fit_ids][m[fit_ids] == k], minlength=n_classes) for k in (0, 1)])
    plan = correction_plan(m[evidence], y[evidence], base_pred[evidence], n_classes, config.groups, count_fit)
    # the minority alone is always a candidate; when every group holds an under-served cell, an adapter
    # for all of them is trained too, and the guard chooses between them (pseudo-groups: always)
    pseudo_all = groups_read["kind"] == "pseudo" and config.groups == "auto"
    plans = ["all", "minority"] if plan["groups"] == "all" or pseudo_all else ["minority"]
    z_n = F.normalize(z, dim=-1) if config.normalize and config.distance == "euclidean" else z
    m_t = torch.as_tensor(m)

    work, peft_model, targets, params, forward_all = _adapter(model, tap, config, adapter, peft_prior, prior)
    start = _lora_state(work.module, adapter)
    # a transformer's frozen layers below the first adapted one: computed once for every fold and step
    cache = (prefix_cache(work, data["inputs"], targets, EVAL_BATCH)
             if getattr(work, "kind", "") == "hf_sequence_classification" and not prior else None)
    inputs = data["inputs"] if cache is None else {**data["inputs"], ROW: torch.arange(n)}

    def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if cache is None:
            return forward_all(batch)
        with cache.rows(batch[ROW]):
            return forward_all(batch)

    budget = config.budget(len(fit_ids))
    budgets = eval_steps(budget, config.eval_every)
    key = run_key(model, detector, data, split, config) if checkpoint is not None else {}
    if checkpoint is not None and checkpoint.is_dir():
        # kept only to resume the same run (a stale one is exit 2 for --resume, set aside for fairfix run)
        if not resume or not check_checkpoint(checkpoint, key, strict=resume != "if-matching"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    total = len(plans) * len(parts) * budget
    done = [0]
    kept: dict[tuple[str, int], dict[str, torch.Tensor]] = {}

    def classes_of(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([forward(_index(inputs, torch.as_tensor(ids[s:s + EVAL_BATCH])))
                                   .argmax(1).numpy() for s in range(0, len(ids), EVAL_BATCH)])

    def judge(plan_name: str, unit: int, train: np.ndarray, held: np.ndarray
              ) -> tuple[np.ndarray, dict[str, list[float]]]:
        rows = _plan_rows(plan_name, train, m, y, risk, n_classes, config, detector.tau)
        _, _, reference = _reference(z_n[train], y_t[train], m_t[train], plan, n_classes)
        out = np.empty((len(budgets), len(config.strengths), len(held)), np.int64)

        def on_eval(step: int) -> None:
            if split is not None:  # a plain split's adapter is the shipped one: keep each candidate's weights
                kept[(plan_name, step)] = _lora_state(work.module, adapter)
            for j, strength in enumerate(config.strengths):
                set_strength(work.module, strength, config.alpha, config.rank, adapter)
                out[budgets.index(step), j] = classes_of(held)
            set_strength(work.module, 1.0, config.alpha, config.rank, adapter)

        def on_step(step: int, loss: float) -> None:
            done[0] += 1
            if progress is not None and (step % config.eval_every == 0 or step == budget):
                progress("adapter", done[0], total, {"loss": loss})

        if len(rows.ids) == 0:  # nothing to train on (no row flagged in these folds): the adapter stays a no-op
            work.module.load_state_dict(start, strict=False)
            done[0] += budget
            for step in budgets:
                on_eval(step)
            return out, {"loss": [], "hinge_open_share": []}
        history = train_steps(work, forward, params, start, inputs, y_t, rows, reference, config,
                              steps=budget, seed=config.seed + (0 if split is not None else unit + 1),
                              on_eval=on_eval, on_step=on_step)
        return out, history

    def skipped() -> None:  # a unit read from the checkpoint counts as done
        done[0] += budget

    adapted, histories = pooled(plans, parts, n, (len(budgets), len(config.strengths)), judge,
                                checkpoint=checkpoint, key=key, config=config, skipped=skipped)
    if progress is not None:
        progress("adapter", total, total, None)

    # -- the guard, on the pooled held-out rows
    ev = evidence
    base_metrics = guard_metrics(base_pred[ev], y[ev], g[ev], n_classes, pos)
    base_others = {name: guard_metrics(base_pred[ev], y[ev], codes[ev], n_classes, pos)["worst_group_accuracy"]
                   for name, codes in guard_groups.items()}
    gates: list[tuple[str, float | None]] = [("detector", t) for t in
                                             ([config.tau] if config.tau is not None else list(TAUS))]
    if pseudo_all and config.tau is None:
        # pseudo-groups are cells within a class, which a gate cannot see at inference: the detector learns
        # them from the representation alone and generalises worse than its folds suggest (coloured digits:
        # a gate chosen at 0.82 out-of-fold worst pseudo-cell gave 0.65 on test, docs/results.md); without
        # group labels the adapter is on for every row (a gate needs an explicit --tau)
        gates = []
    if "all" in plans:
        gates.append(("all", None))
    on_ev = {p: a[..., ev] for p, a in adapted.items()}
    # the gate as the guard sees it: a detector fitted on the guard's own pseudo-labels is re-fitted per fold
    gate_risk = data["oof_risk"](parts) if data.get("oof_risk") is not None and split is None else risk
    ev_kw: dict[str, Any] = {"base_pred": base_pred[ev], "y": y[ev], "g": g[ev], "risk": gate_risk[ev],
                             "n_classes": n_classes}
    sweep = select.sweep(on_ev, budgets, config, gates=gates, positive=pos,
                         guard_groups={k: v[ev] for k, v in guard_groups.items()}, **ev_kw)
    choice = select.choose(sweep, base_metrics, config, adapted=on_ev, budgets=budgets,
                           base_others=base_others, **ev_kw)
    enabled = choice is not None
    known = g[ev] >= 0
    cell_of = g[ev][known] * n_classes + y[ev][known]
    cells = np.bincount(cell_of)
    right = np.bincount(cell_of, weights=(base_pred[ev] == y[ev])[known], minlength=len(cells))
    occupied = np.flatnonzero(cells)
    worst = occupied[np.argmin(right[occupied] / cells[occupied])] if len(occupied) else None
    evidence_info = {"kind": "split" if split is not None else "cross-fit",
                     "folds": None if split is not None else config.folds,
                     "val_fraction": config.val_fraction if split is not None else None,
                     "rows": int(len(ev)), "smallest_cell_rows": int(cells[occupied].min()) if len(occupied) else 0,
                     "worst_cell_rows": int(cells[worst]) if worst is not None else 0,  # the base's worst cell
                     "budget": budget, "candidates": len(sweep), "groups": groups_read}

    # -- the shipped adapter: trained on every row (cross-fit) or the split's training rows, for the chosen budget
    final_plan = choice["groups"] if choice is not None else plans[-1]
    rows = _plan_rows(final_plan, fit_ids, m, y, risk, n_classes, config, detector.tau)
    protos, counts, reference = _reference(z_n[fit_ids], y_t[fit_ids], m_t[fit_ids], plan, n_classes)
    anchors = rows.ids[rows.anchors]
    hinge_start = open_share(z[torch.as_tensor(anchors)], y_t[torch.as_tensor(anchors)], reference, config)
    history: dict[str, list[float]] = {"loss": [], "hinge_open_share": []}
    if choice is not None:
        steps = int(choice["steps"])

        def ship_step(step: int, loss: float) -> None:
            if progress is not None and (step % config.eval_every == 0 or step == steps):
                progress("adapter (shipped)", step, steps, {"loss": loss})

        if (final_plan, steps) in kept:  # the plain split's own adapter at the chosen budget: no second fit
            work.module.load_state_dict(kept[(final_plan, steps)], strict=False)
            unit = histories[final_plan][0]
            history = {k: v[: budgets.index(steps) + 1] for k, v in unit.items()}
        else:
            history = train_steps(work, forward, params, start, inputs, y_t, rows, reference, config,
                                  steps=steps, seed=config.seed, on_step=ship_step)
        set_strength(work.module, choice["strength"], config.alpha, config.rank, adapter)
        peft_model.peft_config[adapter].lora_alpha = config.alpha * choice["strength"]
    else:  # ship a no-op adapter (B = 0), so that even a forced pass cannot apply a rejected update
        work.module.load_state_dict(start, strict=False)
        with torch.no_grad():
            for lora in lora_layers(work.module):
                b: Any = lora.lora_B
                if adapter in b:
                    b[adapter].weight.zero_()
    gate = choice["gate"] if choice is not None else "detector"
    reasons = [] if enabled else select.why_off(sweep, base_metrics, hinge_start=hinge_start, detector=detector,
                                                plan=plan, config=config, evidence=evidence_info,
                                                base_others=base_others)
    if not enabled and len(rows.ids) == 0:
        reasons.insert(0, f"no row is flagged by the detector at tau {detector.tau:g}: the adapter had nothing to "
                          "train on")
    unit_hist = histories[final_plan]
    correction = {
        "groups": final_plan,
        "candidates": plans,
        "corrected_groups": ([*map(str, detector.minority)] or ["the pseudo-minority cells"])
                            + (["the other groups"] if final_plan == "all" else []),
        "minority": list(detector.minority),
        "reference_group": ["minority" if r else "rest" for r in plan["reference"]],
        "cell_accuracy_validation": plan["cell_accuracy_validation"],
        "anchors": int(len(anchors)),
        "hinge_open_share": hinge_start,
        "hinge_open_history": history["hinge_open_share"] or (unit_hist[0]["hinge_open_share"] if unit_hist else []),
        "margin": config.margin, "distance": config.distance, "normalize": config.normalize,
        "objective": config.objective, "balance": config.balance,
        "warning": (f"the contrastive hinge is open for {hinge_start:.1%} of the {len(anchors)} anchors: "
                    "the correction has little to act on (the base already separates the corrected rows' "
                    "classes at this margin)") if hinge_start < HINGE_CLOSED and config.objective != "task" else None,
    }
    corrected = CorrectedModel(work, peft_model, detector, tau=choice["tau"] if choice is not None else None,
                               enabled=enabled, tap_layer=tap, gate=gate,
                               prototypes={"cells": protos, "counts": counts, "reference": reference},
                               info={"targets": list(targets)})
    held_pred = (base_pred[ev] if choice is None
                 else select.setting_classes(choice, on_ev, budgets, config, base_pred[ev], gate_risk[ev]))
    record = {
        "base_validation": base_metrics,
        "chosen": choice,
        "adapter_enabled": enabled,
        "gate": gate,
        "correction": correction,
        "evidence": evidence_info,
        "guard": {"max_accuracy_drop": config.max_accuracy_drop, "guard_se": config.guard_se,
                  "floor": base_metrics["accuracy"] - config.max_accuracy_drop,
                  "reason": "; ".join(reasons) if reasons else None, "reasons": reasons,
                  **({"attribute_worst_group_accuracy_before": base_others} if guard_groups else {})},
        "sweep": sweep,
        "train_rows": int(len(rows.ids)),
        "loss_history": history["loss"] or (unit_hist[0]["loss"] if unit_hist else []),
        "unit_loss_histories": {p: [h["loss"] for h in hs] for p, hs in histories.items()},
        "targets": list(targets),
        "config": asdict(config),
        # arrays for the caller's out-of-fold audit (popped before the record is written anywhere)
        "_held_out": {"rows": ev, "base_pred": base_pred[ev], "pred": held_pred, "base_pred_all": base_pred,
                      "g": g[ev]},
    }
    return corrected, record


def guard_cells(data: dict[str, Any], flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The guard's group codes, the training rows' minority (1/0) and what the guard read.

    With group labels: the codes as given, unknown ones (partial labels) filled from the
    detector's flags when ``fill_group`` is given (else left -1: counted in accuracy only).
    Without (``group`` None): the pseudo-labels, or the flags where there are none.
    """
    n = len(flagged)
    if data.get("group") is None:
        pseudo = data.get("pseudo")
        pm = flagged.copy() if pseudo is None else np.where(np.isnan(pseudo), flagged, pseudo).astype(np.int64)
        return pm, pm, {"kind": "pseudo", "labelled_rows": 0, "detector_rows": n,
                        "text": "the guard read no group labels: its cells are (label, pseudo-group), the "
                                "pseudo-group found without group labels (the detector's pseudo-labels), and "
                                "its worst-group figure is the worst pseudo-cell's"}
    g = np.asarray(data["group"]).copy()
    unknown = g < 0
    fill = data.get("fill_group")
    if fill is not None:
        g[unknown] = np.where(flagged[unknown] == 1, fill[0], fill[1])
    minority = data.get("minority")
    m = flagged if minority is None else np.where(np.asarray(minority) >= 0, minority, flagged)
    labelled = int((~unknown).sum())
    if not unknown.any():
        return g, m, {"kind": "labels", "labelled_rows": labelled, "detector_rows": 0,
                      "text": f"the guard read the group labels of all {labelled} rows"}
    if fill is None:
        return g, m, {"kind": "labels", "labelled_rows": labelled, "detector_rows": 0,
                      "text": f"the guard read the group labels of {labelled} rows; the {int(unknown.sum())} rows "
                              "without one count in accuracy only"}
    return g, m, {"kind": "labels+detector", "labelled_rows": labelled, "detector_rows": int(unknown.sum()),
                  "text": f"the guard read the group labels of {labelled} rows and the detector's groups (its flags: "
                          f"minority or not) of the {int(unknown.sum())} rows without one"}


def minority_codes(values: Sequence[Any], minority: Sequence[Any]) -> np.ndarray:
    """1 for minority values, 0 for others, -1 for missing."""
    mset = {str(m) for m in minority}
    return np.array([-1 if v is None else int(str(v) in mset) for v in values], dtype=np.int64)


def group_codes(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Integer codes of group values (-1 for missing) and the distinct values."""
    distinct = sorted({str(v) for v in values if v is not None})
    index = {v: i for i, v in enumerate(distinct)}
    return np.array([-1 if v is None else index[str(v)] for v in values], dtype=np.int64), distinct
