"""``fairfix.correct``: the whole FairNet job on a table (detector, adapter, guard, reports, bundle)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fairfix import errors
from fairfix.correct.fairnet import (
    CorrectConfig,
    CorrectedModel,
    fit_fairnet,
    group_codes,
    minority_codes,
)
from fairfix.data.frames import SOURCE, source_name
from fairfix.models.base import Model


def _split(n: int, fraction: float, strata: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, val) row ids."""
    rng = np.random.default_rng(seed)
    val = []
    for s in np.unique(strata):
        ids = rng.permutation(np.flatnonzero(strata == s))
        val.append(ids[: int(round(len(ids) * fraction))])
    v = np.sort(np.concatenate(val)) if val else np.zeros(0, int)
    t = np.setdiff1d(np.arange(n), v)
    return t, v


def detector_summary(corrected: CorrectedModel, frame: Any, group: str) -> dict[str, Any]:
    """The detector on the evaluation rows: TPR/FPR against the minority labels, activation rates."""
    from fairfix.data.groups import group_values

    _, extras = corrected.predict_with_extras(frame)
    flagged = extras["corrected"]
    risk = extras["risk"]
    gvals, _ = group_values(frame, group)
    truth = minority_codes(list(gvals), corrected.detector.minority)
    tau = corrected.tau if corrected.tau is not None else corrected.detector.tau
    raw = risk > tau  # what the detector says at the operating tau, adapter on or off
    known = truth >= 0
    by_group = {str(v): float(flagged[gvals == v].mean()) for v in sorted({g for g in gvals if g is not None}, key=str)}
    pos, neg = known & (truth == 1), known & (truth == 0)
    return {
        "tpr": float(raw[pos].mean()) if pos.any() else None,
        "fpr": float(raw[neg].mean()) if neg.any() else None,
        "activation_rate": float(flagged.mean()),
        "activation_rate_by_group": by_group,
        "minority": corrected.detector.minority,
        "mode": corrected.detector.mode,
    }


def training_frame(data: Any, model: Model, *, label: str, groups: Sequence[str], input_format: str | None,
                   full: Sequence[str] = ()) -> tuple[Any, np.ndarray]:
    """The training table (a pandas frame) and its labels as class indices, checked against ``model``.

    Exit-2 errors name the missing ``--label``/``--group`` column, the model's missing input
    column, an empty label or a label value that is not a class of the model, and a group
    column of ``full`` (detector mode full) with an empty cell: file, count and first row
    of the whole table, before any work.
    """
    from fairfix.data.frames import read_frame
    from fairfix.data.labels import encode_labels

    frame = read_frame(data, None, input_format).reset_index(drop=True)
    for col, what in ((label, "--label"), *((g, "--group") for g in groups)):
        if col not in frame.columns:
            raise errors.DataError(f"{what}: no column {col!r}; columns are: {', '.join(map(repr, frame.columns))}")
    missing = [c for c in model.input_columns if c not in frame.columns]
    if missing:
        raise errors.DataError(f"the model reads column {missing[0]!r}, which the data lacks")
    if frame[label].isna().any():
        raise errors.DataError(f"label column {label!r} has {int(frame[label].isna().sum())} empty value(s)")
    unknown = sorted(set(map(str, frame[label].unique())) - set(map(str, model.classes)))
    if unknown:
        raise errors.DataError(f"label value {unknown[0]!r} in {label!r} is not a class of the model "
                               f"(classes: {', '.join(map(repr, model.classes))})")
    for col in full:
        empty = np.flatnonzero(frame[col].isna().to_numpy())
        if len(empty):
            name = str(data) if isinstance(data, str | Path) else "<DataFrame>"
            raise errors.DataError(f"{name}: group column {col!r} has {len(empty)} missing value(s) (first at row "
                                   f"{empty[0] + 1}); --mode full needs a value in every row (use --mode partial "
                                   "or auto: rows with an empty cell then train nothing but are still scored)")
    return frame, encode_labels(frame[label], model.classes)


def correct(
    data: Any,
    model: Any,
    *,
    label: str,
    group: str,
    minority: Sequence[Any] | None = None,
    detector: Any = None,
    detector_config: Any = None,
    config: CorrectConfig | None = None,
    eval_data: Any = None,
    input_format: str | None = None,
    progress: Callable[..., None] | None = None,
    checkpoint: Path | None = None,
    resume: bool | str = False,
) -> tuple[CorrectedModel, dict[str, Any]]:
    """Fit FairNet on ``data`` for ``model`` and return the corrected model and its reports.

    The validation split (``config.val_fraction`` of ``data``, stratified by label and
    group) chooses the epoch and tau under the no-loss guard; the before/after audits
    are computed on ``eval_data`` when given, else on that validation split.  With
    ``detector_config.mode == "none"`` the group labels of the training rows are not
    used (the detector is unsupervised and the adapter trains on flagged rows); the
    validation rows' labels still drive the guard.
    """
    import fairfix
    from fairfix.data.frames import read_frame
    from fairfix.data.groups import group_values
    from fairfix.detect.fit import (
        Detector,
        DetectorConfig,
        fit_detector,
        load_detector,
    )
    from fairfix.report.compare import build_compare

    config = config or CorrectConfig()
    full = [group] if detector is None and detector_config is not None and detector_config.mode == "full" else []
    frame, y_all = training_frame(data, model, label=label, groups=[group], input_format=input_format, full=full)
    gvals, distinct = group_values(frame, group)
    strata = np.array([f"{y}|{g}" for y, g in zip(y_all, gvals, strict=True)])
    tr, va = _split(len(frame), config.val_fraction, strata, config.seed)
    train_frame, val_frame = frame.iloc[tr].reset_index(drop=True), frame.iloc[va].reset_index(drop=True)
    val_frame.attrs = {**val_frame.attrs, SOURCE: f"validation split of {source_name(frame)}"}  # audits name it

    if isinstance(detector, str | Path):
        detector = load_detector(detector, model)
    if detector is None:
        dcfg = detector_config or DetectorConfig(seed=config.seed)
        det_frame = train_frame
        if dcfg.mode == "none":
            det_frame = train_frame.drop(columns=[group])
        elif not minority:
            # DESIGN.md section 3: the default minority is the group of the worst cell on the validation split
            # (not on the detector's own held-out rows, which are few when labels are partial).
            minority = _default_minority_on_val(model, val_frame, label, group)
        detector = fit_detector(det_frame, model, group=None if dcfg.mode == "none" else group,
                                minority=minority, label=label, config=dcfg, progress=progress)
    if not isinstance(detector, Detector):
        raise errors.UsageError("detector must be a fairfix Detector or a detector directory")
    mode = detector.mode
    minority_vals = detector.minority
    if mode == "none":
        # No sensitive labels in training: the detector's flags stand for minority membership.
        if not minority_vals:
            minority_vals = _default_minority_on_val(model, val_frame, label, group)
            detector.minority = minority_vals
        train_minority = None
    else:
        train_minority = minority_codes(list(group_values(train_frame, group)[0]), minority_vals)
    val_values = list(group_values(val_frame, group)[0])
    val_g, _ = group_codes(val_values)
    train = {"inputs": model.encode(train_frame), "y": y_all[tr],
             "minority": train_minority, "group": None}
    val = {"inputs": model.encode(val_frame), "y": y_all[va], "group": val_g,
           "minority": minority_codes(val_values, minority_vals)}
    corrected, record = fit_fairnet(model, detector, train, val, config, progress=progress,
                                    checkpoint=checkpoint, resume=resume)

    eval_frame = val_frame if eval_data is None else read_frame(eval_data, None, input_format)
    if eval_data is None:
        eval_name = "validation split"
    elif isinstance(eval_data, str | Path):
        eval_name = str(eval_data)
    else:
        eval_name = f"<in-memory table of {len(eval_frame)} rows>"
    # Rows whose group cell is empty (partial labels) cannot be placed in a group: the before/after
    # audits leave them out and say how many, as the several-attribute correction does.
    known = eval_frame[group].notna().to_numpy()
    if not known.any():
        raise errors.DataError(f"{eval_name}: group column {group!r} is empty in every row; "
                               "the before/after audits need rows with a group")
    if not known.all():
        eval_name += f" ({int((~known).sum())} row(s) with an empty {group!r} cell left out)"
    audited = eval_frame[known]
    before = fairfix.audit(audited, label=label, group=[group], model=model, bootstrap=0).to_dict()
    after = fairfix.audit(audited, label=label, group=[group], model=corrected, bootstrap=0).to_dict()
    det = detector_summary(corrected, eval_frame, group)
    compare = build_compare(before, after, detector=det, tau=corrected.tau, extra={
        "evaluated_on": eval_name,
        "adapter_enabled": corrected.enabled,
        "guard": record["guard"],
        "gate": record["gate"],
        "correction": record["correction"],
        "chosen": record["chosen"],
        "base_validation": record["base_validation"],
        "sweep": record["sweep"],
        "detector_report": detector.report,
    })
    return corrected, {"record": record, "before": before, "after": after, "compare": compare}


def _default_minority_on_val(model: Any, frame: Any, label: str, group: str) -> list[Any]:
    import fairfix

    rep = fairfix.audit(frame[frame[group].notna()], label=label, group=[group], model=model, bootstrap=0)
    worst = rep.summary["worst_group"]
    return [] if worst is None else [worst["group"][group]]
