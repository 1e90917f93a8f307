"""Progressive correction of several sensitive attributes (the paper's Table 2: race, then gender).

One bias detector and one named LoRA adapter per attribute, fitted in order: attribute
k's detector reads the model corrected by attributes ``< k`` (each adapter on for the
rows its own detector flags), and its adapter is trained on that model's predictions
and representations.  At inference one pass applies them all
(:mod:`fairfix.correct.stacking`): each row gets the adapters whose detector flags it;
rows flagged by none are bit-identical to the base.

The guard covers every attribute: a setting for attribute k passes when the overall
validation accuracy holds (the single-attribute rule: ``CorrectConfig.max_accuracy_drop``
and ``guard_se``), attribute k's worst (group, label) cell rises, and no other
attribute's worst cell falls below its value before this step.  The intersection of the
attributes is reported (before/after) but not guarded: its cells are small and their
accuracies too noisy on a validation split to veto a setting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairfix import errors
from fairfix.correct.fairnet import CorrectConfig, fit_fairnet, group_codes, minority_codes
from fairfix.correct.gating import lora_layers
from fairfix.correct.stacking import Stage, stacked_forward
from fairfix.data.frames import SOURCE, source_name
from fairfix.models.base import Model


def adapter_name(index: int, group: str) -> str:
    """The peft adapter name of attribute ``index`` (a valid module key: letters, digits, ``_``)."""
    safe = re.sub(r"[^0-9A-Za-z_]", "_", str(group))[:40]
    return f"fairnet_{index}_{safe}"


@dataclass
class Attribute:
    """One corrected attribute: its column, adapter, detector and the guard's choice."""

    group: str
    adapter: str
    detector: Any  # fairfix.detect.Detector
    tap_layer: str
    tau: float | None
    enabled: bool
    gate: str  # "detector" or "all"
    targets: list[str]
    prototypes: dict[str, torch.Tensor] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    def stage(self, tau: float | None = None) -> Stage:
        """The gate of this attribute as it runs at inference (``tau`` overrides the chosen one)."""
        if not self.enabled:
            return Stage(self.adapter, self.tap_layer, "detector", self.detector.module, math.inf)
        if self.gate == "all":
            return Stage(self.adapter, self.tap_layer, "on", self.detector.module)
        chosen = self.tau if tau is None else tau
        if chosen is None:
            raise ValueError(f"attribute {self.group!r}: an enabled detector gate needs a tau")
        return Stage(self.adapter, self.tap_layer, "detector", self.detector.module, float(chosen))


class ProgressiveModel(Model):
    """A base model with one adapter per sensitive attribute, each switched on per row by its detector."""

    kind = "fairnet_bundle"

    def __init__(self, base: Model, peft_model: Any, attributes: Sequence[Attribute], **kw: Any):
        super().__init__(base.module, base.classes, base.positive, base.input_columns, **kw)
        self.base = base  # its module holds every attribute's LoRA layers
        self.peft_model = peft_model
        self.attributes = list(attributes)
        self.extra_outputs = {"corrected": "boolean"}  # the columns predict_with_extras adds, in its order
        for a in self.attributes:
            self.extra_outputs.update({f"risk_{a.group}": "double", f"corrected_{a.group}": "boolean"})
        self.batch_rows = base.batch_rows
        self.numeric_columns = base.numeric_columns
        self._lora: list[Any] | None = None

    @property
    def enabled(self) -> bool:
        """True when some attribute's adapter is on."""
        return any(a.enabled for a in self.attributes)

    @property
    def lora(self) -> list[Any]:
        """The LoRA layers (one walk over the modules, then kept)."""
        if self._lora is None:
            self._lora = lora_layers(self.base.module)
        return self._lora

    def stages(self) -> list[Stage]:
        """Every attribute's gate, in fit order."""
        return [a.stage() for a in self.attributes]

    def encode(self, frame: Any) -> dict[str, torch.Tensor]:
        """The base model's inputs."""
        return self.base.encode(frame)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the one stacked pass."""
        return stacked_forward(self.base, inputs, self.stages(), self.lora)[0]

    def gated(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[Any], list[np.ndarray]]:
        """``(logits, risk per attribute, flags per attribute)`` of one pass."""
        return stacked_forward(self.base, inputs, self.stages(), self.lora)

    @torch.no_grad()
    def predict_with_extras(self, frame: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Probabilities, ``corrected`` (some adapter on) and ``risk_<group>`` / ``corrected_<group>`` per attribute."""
        logits, risks, flags = self.gated(self.encode(frame))
        proba = torch.softmax(logits.float(), dim=-1).double().numpy()
        extras: dict[str, np.ndarray] = {"corrected": np.any(np.stack(flags), axis=0)}
        for a, r, f in zip(self.attributes, risks, flags, strict=True):
            extras[f"risk_{a.group}"] = r
            extras[f"corrected_{a.group}"] = f
        return proba, extras

    @property
    def default_tap_layer(self) -> str:
        """The first attribute's tap layer."""
        return self.attributes[0].tap_layer if self.attributes else self.base.default_tap_layer

    @property
    def default_lora_targets(self) -> list[str]:
        """The base's LoRA targets."""
        return self.base.default_lora_targets

    def describe(self) -> dict[str, Any]:
        """Identity of the bundle and of its base."""
        d = super().describe()
        d.update({"base": self.base.describe(), "adapter_enabled": self.enabled,
                  "attributes": [{"group": a.group, "tau": a.tau, "gate": a.gate, "adapter_enabled": a.enabled}
                                 for a in self.attributes]})
        return d


def check_groups(groups: Sequence[str], per_attribute: dict[str, Sequence[Any]]) -> None:
    """Exit 2 for a repeated ``--group`` or per-attribute options that do not align with the groups."""
    seen: set[str] = set()
    for g in groups:
        if g in seen:
            raise errors.UsageError(f"--group {g!r} is given twice; each sensitive attribute is corrected once")
        seen.add(g)
    for opt, values in per_attribute.items():
        if len(values) not in (1, len(groups)):
            raise errors.UsageError(f"{opt}: {len(values)} value(s) for {len(groups)} --group; give one value "
                                    "for every attribute, or one for all")


def parse_minority(values: Sequence[str] | None, groups: Sequence[str]) -> dict[str, list[str]]:
    """``--minority COL=VALUE`` (repeatable) as ``{group: [values]}`` for several groups."""
    out: dict[str, list[str]] = {}
    for v in values or []:
        col, sep, val = str(v).partition("=")
        if not sep or col not in groups:
            raise errors.UsageError(f"--minority {v!r}: with several --group, write COLUMN=VALUE with COLUMN one "
                                    f"of {', '.join(map(repr, groups))}")
        out.setdefault(col, []).append(val)
    return out


def correct_many(
    data: Any,
    model: Model,
    *,
    label: str,
    groups: Sequence[str],
    minority: Mapping[str, Sequence[Any]] | None = None,
    detector_configs: Sequence[Any] | None = None,
    config: CorrectConfig | None = None,
    eval_data: Any = None,
    input_format: str | None = None,
    progress: Callable[..., None] | None = None,
) -> tuple[ProgressiveModel, dict[str, Any]]:
    """Correct ``groups`` in order on ``data``; the corrected model and its reports.

    ``detector_configs``: one :class:`~fairfix.detect.fit.DetectorConfig` per group (its
    ``mode``: full, partial, none or auto for that attribute's labels), or one for all.
    The validation split (stratified by the label and the first group, as for one group) chooses each attribute's
    setting under the guard (module docstring); the before/after audits run on
    ``eval_data`` when given, else on the validation split, per attribute and over the
    intersection of all of them.
    """
    from fairfix.correct.crossfit import split_rows
    from fairfix.correct.run import _default_minority_on_val, training_frame
    from fairfix.data.groups import group_values
    from fairfix.detect.fit import DetectorConfig, fit_detector

    config = config or CorrectConfig()
    groups = list(groups)
    dcfgs = list(detector_configs or [DetectorConfig(seed=config.seed)])
    check_groups(groups, {"--mode": dcfgs})
    if len(dcfgs) == 1:
        dcfgs = dcfgs * len(groups)
    minority = dict(minority or {})
    frame, y_all = training_frame(data, model, label=label, groups=groups, input_format=input_format,
                                  full=[g for g, d in zip(groups, dcfgs, strict=True) if d.mode == "full"])
    codes = {g: group_codes(list(group_values(frame, g)[0]))[0] for g in groups}
    # stratified by the label and the first attribute: the split `fairfix correct --group FIRST` draws, so a
    # model trained off its validation rows stays off them whatever the other attributes' labels
    strata = codes[groups[0]] * len(model.classes) + y_all
    split = None if config.val_fraction is None else split_rows(len(frame), config.val_fraction, strata, config.seed)
    fit_frame = frame if split is None else frame.iloc[split[0]].reset_index(drop=True)
    judge_frame = frame if split is None else frame.iloc[split[1]].reset_index(drop=True)
    judge_frame.attrs = {**judge_frame.attrs, SOURCE: (f"validation split of {source_name(frame)}" if split is not None
                                                       else source_name(frame))}  # audits name it
    inputs = model.encode(frame)

    attributes: list[Attribute] = []
    work: Model = model  # the model corrected so far (its module holds the adapters fitted so far)
    peft_model: Any = None
    for k, group in enumerate(groups):
        current = model if k == 0 else ProgressiveModel(work, peft_model, attributes, path=model.path,
                                                        digest=model.digest)
        dcfg = dcfgs[k]
        mins = list(minority.get(group) or [])
        det_frame = fit_frame.drop(columns=[group]) if dcfg.mode == "none" else fit_frame
        if dcfg.mode != "none" and not mins:
            mins = _default_minority_on_val(current, judge_frame, label, group)
        detector = fit_detector(det_frame, current, group=None if dcfg.mode == "none" else group,
                                minority=mins, label=label, config=dcfg, progress=progress)
        if detector.mode == "none" and not detector.minority:
            detector.minority = _default_minority_on_val(current, judge_frame, label, group)
        truth = minority_codes(list(group_values(frame, group)[0]), detector.minority)
        rows = {"inputs": inputs, "y": y_all, "group": codes[group],
                "minority": None if detector.mode == "none" else truth,
                "guard_groups": {g: codes[g] for g in groups if g != group}}
        name = adapter_name(k, group)
        corrected, record = fit_fairnet(work, detector, rows, config, split=split, progress=progress, adapter=name,
                                        prior=[a.stage() for a in attributes], peft_prior=peft_model)
        record.pop("_held_out")
        work, peft_model = corrected.base, corrected.peft_model
        record["group"] = group
        record["detector_report"] = detector.report
        record["fitted_on"] = "base model" if k == 0 else f"model corrected for {', '.join(groups[:k])}"
        attributes.append(Attribute(group, name, detector, detector.layer, corrected.tau, corrected.enabled,
                                    corrected.gate, list(record["targets"]), corrected.prototypes, record))
    final = ProgressiveModel(work, peft_model, attributes, path=None, digest=None)
    return final, reports(final, model, frame=judge_frame if eval_data is None else eval_data, label=label,
                          groups=groups, eval_name=_eval_name(eval_data, split is not None),
                          input_format=input_format)


def _eval_name(eval_data: Any, plain_split: bool) -> str:
    if eval_data is None:
        return ("validation split" if plain_split else
                "DATA, in-sample (the shipped adapters trained on these rows: optimistic; pass --eval)")
    if isinstance(eval_data, str | Path):
        return str(eval_data)
    return f"<in-memory table of {len(eval_data)} rows>"


def reports(corrected: ProgressiveModel, base: Model, *, frame: Any, label: str, groups: Sequence[str],
            eval_name: str, input_format: str | None = None) -> dict[str, Any]:
    """Before/after audits over the intersection and per attribute, and the compare document."""
    import fairfix
    from fairfix.data.frames import read_frame
    from fairfix.data.groups import group_values
    from fairfix.report.compare import build_compare

    frame = read_frame(frame, None, input_format).reset_index(drop=True)
    known = frame[list(groups)].notna().all(axis=1)  # rows whose every attribute is labelled (the intersection's)
    before = fairfix.audit(frame[known], label=label, group=list(groups), model=base, bootstrap=0).to_dict()
    after = fairfix.audit(frame[known], label=label, group=list(groups), model=corrected, bootstrap=0).to_dict()
    _, extras = corrected.predict_with_extras(frame)
    per_attribute = []
    for a in corrected.attributes:
        mine = frame[frame[a.group].notna()]  # each attribute on its own labelled rows
        b = fairfix.audit(mine, label=label, group=[a.group], model=base, bootstrap=0).to_dict()
        f = fairfix.audit(mine, label=label, group=[a.group], model=corrected, bootstrap=0).to_dict()
        gv, _ = group_values(frame, a.group)
        truth = minority_codes(list(gv), a.detector.minority)
        risk, flagged = extras[f"risk_{a.group}"], extras[f"corrected_{a.group}"]
        raw = risk > (a.tau if a.tau is not None else a.detector.tau)
        pos, neg = truth == 1, truth == 0
        rec = a.record
        per_attribute.append({
            "group": a.group, "adapter": a.adapter, "fitted_on": rec.get("fitted_on"),
            "before": b["summary"], "after": f["summary"],
            "delta": {k: (None if b["summary"].get(k) is None or f["summary"].get(k) is None
                          else float(f["summary"][k]) - float(b["summary"][k]))
                      for k in ("accuracy", "worst_group_accuracy", "equalized_odds_difference")},
            "detector": {"tpr": float(raw[pos].mean()) if pos.any() else None,
                         "fpr": float(raw[neg].mean()) if neg.any() else None,
                         "activation_rate": float(flagged.mean()), "minority": a.detector.minority,
                         "mode": a.detector.mode},
            "tau": a.tau, "gate": rec["gate"], "adapter_enabled": a.enabled, "chosen": rec["chosen"],
            "guard": rec["guard"], "correction": rec["correction"], "base_validation": rec["base_validation"],
            "evidence": rec.get("evidence"),
            "detector_report": rec.get("detector_report"),
        })
    compare = build_compare(before, after, detector=None, tau=None, extra={
        "evaluated_on": eval_name, "adapter_enabled": corrected.enabled,
        "group_columns": list(groups), "attributes": per_attribute,
        "activation_rate": float(extras["corrected"].mean()),
        "audited_rows": {"intersection": int(known.sum()), "all": int(len(frame))},
    })
    return {"before": before, "after": after, "compare": compare,
            "records": [a.record for a in corrected.attributes]}
