"""``fairfix.correct``: the whole FairNet job on a table (detector, adapter, guard, reports, bundle)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fairfix import errors
from fairfix.correct.crossfit import split_rows
from fairfix.correct.fairnet import (
    CorrectConfig,
    CorrectedModel,
    fit_fairnet,
    group_codes,
    minority_codes,
)
from fairfix.data.frames import SOURCE, source_name
from fairfix.models.base import Model


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

    The guard chooses the budget, strength and gate on cross-fitted evidence (every row
    judged by adapters that did not train on it; ``config.folds`` folds stratified by label
    and group), or on a plain split when ``config.val_fraction`` is set.  The before/after
    audits run on ``eval_data`` when given, else on the guard's rows: the base's predictions
    against the held-out adapters' (out-of-fold, so not the shipped adapter's in-sample
    figures).  With ``detector_config.mode == "none"`` the group labels are not used for
    training (the detector is unsupervised and the adapter trains on flagged rows); the
    guard still reads them.
    """
    import fairfix
    from fairfix.data.frames import read_frame
    from fairfix.data.groups import group_values
    from fairfix.detect.fit import (
        Detector,
        DetectorConfig,
        default_minority,
        fit_detector,
        load_detector,
    )
    from fairfix.report.compare import build_compare

    config = config or CorrectConfig()
    full = [group] if detector is None and detector_config is not None and detector_config.mode == "full" else []
    frame, y_all = training_frame(data, model, label=label, groups=[group], input_format=input_format, full=full)
    gvals, distinct = group_values(frame, group)
    g_codes, _ = group_codes(list(gvals))
    strata = g_codes * len(model.classes) + y_all
    split = None if config.val_fraction is None else split_rows(len(frame), config.val_fraction, strata, config.seed)
    # the detector and the default minority: the training rows of a plain split, every row when cross-fitting
    fit_frame = frame if split is None else frame.iloc[split[0]].reset_index(drop=True)
    judge_frame = frame if split is None else frame.iloc[split[1]].reset_index(drop=True)

    if isinstance(detector, str | Path):
        detector = load_detector(detector, model)
    worst = None
    if detector is None:
        dcfg = detector_config or DetectorConfig(seed=config.seed)
        det_frame = fit_frame
        if dcfg.mode == "none":
            det_frame = fit_frame.drop(columns=[group])
        elif not minority:
            # DESIGN.md section 3: the default minority is the group of the worst cell on the guard's rows
            # (not on the detector's own held-out rows, which are few when labels are partial).
            minority, worst = default_minority(judge_frame, np.arange(len(judge_frame)), model, label, group)
        detector = fit_detector(det_frame, model, group=None if dcfg.mode == "none" else group,
                                minority=minority, label=label, config=dcfg, progress=progress)
        if worst is not None:  # say how the minority was chosen, as `fairfix detect` does
            detector.report.update(minority_chosen_by="worst (group, label) cell of the base model on the guard's "
                                                      "rows", worst_cell=worst)
    if not isinstance(detector, Detector):
        raise errors.UsageError("detector must be a fairfix Detector or a detector directory")
    minority_vals = detector.minority
    if detector.mode == "none":
        # No sensitive labels in training: the detector's flags stand for minority membership.
        if not minority_vals:
            minority_vals = _default_minority_on_val(model, judge_frame, label, group)
            detector.minority = minority_vals
    truth = minority_codes(list(gvals), minority_vals)
    rows = {"inputs": model.encode(frame), "y": y_all, "group": g_codes, "minority_eval": truth,
            "minority": None if detector.mode == "none" else truth}
    corrected, record = fit_fairnet(model, detector, rows, config, split=split, progress=progress,
                                    checkpoint=checkpoint, resume=resume)
    held = record.pop("_held_out")

    if eval_data is None:  # the guard's own rows: the base's predictions against the held-out adapters'
        eval_frame = frame.iloc[held["rows"]].reset_index(drop=True)
        eval_name = ("validation split" if split is not None
                     else f"out-of-fold predictions on DATA ({config.folds} folds)")
        eval_frame.attrs = {**eval_frame.attrs, SOURCE: f"{eval_name} of {source_name(frame)}"}  # audits name it
        classes: tuple[Any, Any] | None = (held["base_pred"], held["pred"])
    else:
        eval_frame = read_frame(eval_data, None, input_format)
        eval_name = (str(eval_data) if isinstance(eval_data, str | Path)
                     else f"<in-memory table of {len(eval_frame)} rows>")
        classes = None
    # Rows whose group cell is empty (partial labels) cannot be placed in a group: the before/after
    # audits leave them out and say how many, as the several-attribute correction does.
    known = eval_frame[group].notna().to_numpy()
    if not known.any():
        raise errors.DataError(f"{eval_name}: group column {group!r} is empty in every row; "
                               "the before/after audits need rows with a group")
    if not known.all():
        eval_name += f" ({int((~known).sum())} row(s) with an empty {group!r} cell left out)"
    audited = eval_frame[known]
    if classes is not None:
        before = _audit_classes(audited, classes[0][known], model, label, group)
        after = _audit_classes(audited, classes[1][known], model, label, group)
    else:
        before = fairfix.audit(audited, label=label, group=[group], model=model, bootstrap=0).to_dict()
        after = fairfix.audit(audited, label=label, group=[group], model=corrected, bootstrap=0).to_dict()
    det = detector_summary(corrected, eval_frame, group)
    acc_data = float((held["base_pred_all"] == y_all).mean())  # the base's pass over DATA, made once in the fit
    record["warnings"] = memorised_rows(model, data, acc_data, eval_frame if eval_data is not None else None, label)
    if eval_data is None and corrected.enabled:  # adapter off: after equals before, nothing was chosen
        record["warnings"].append(chosen_on_note(eval_name))
    compare = build_compare(before, after, detector=det, tau=corrected.tau, extra={
        "evaluated_on": eval_name,
        "adapter_enabled": corrected.enabled,
        "guard": record["guard"],
        "gate": record["gate"],
        "correction": record["correction"],
        "evidence": record["evidence"],
        "chosen": record["chosen"],
        "base_validation": record["base_validation"],
        "sweep": record["sweep"],
        "detector_report": detector.report,
        "warnings": record["warnings"],
    })
    return corrected, {"record": record, "before": before, "after": after, "compare": compare}


def _audit_classes(frame: Any, classes: np.ndarray, model: Model, label: str, group: str) -> dict[str, Any]:
    """The audit of given class predictions (indices into ``model.classes``) on ``frame``'s rows."""
    import fairfix

    col = "__fairfix_pred__"
    labelled = frame.assign(**{col: np.asarray(model.classes, dtype=object)[classes]})
    return fairfix.audit(labelled, label=label, group=[group], pred=col, positive=model.positive, bootstrap=0
                         ).to_dict()


#: Accuracy on DATA this much above the accuracy on unseen rows says the base has fitted DATA.
MEMORISED_GAP = 0.05


def memorised_rows(model: Model, data: Any, acc_data: float, eval_frame: Any, label: str) -> list[str]:
    """A one-line warning when the base has fitted DATA's rows (they teach the adapter little).

    Two signals: DATA is the file the base was trained on (the model's manifest records its
    sha256), or the base's accuracy on DATA (``acc_data``) is ``MEMORISED_GAP`` above its
    accuracy on the ``--eval`` rows.
    """
    from fairfix.artifacts import data_fingerprint
    from fairfix.data.frames import embedded_file

    hint = ("rows the base has fitted teach the adapter little: pass rows the base never saw as DATA "
            "(hold some out of `fairfix train`)")
    trained_on = ((getattr(model, "manifest", None) or {}).get("training") or {}).get("data") or {}
    fp = data_fingerprint(embedded_file(str(data)) or data) if isinstance(data, str | Path) else {"sha256": None}
    if fp["sha256"] is not None and fp["sha256"] == trained_on.get("sha256"):
        return [f"DATA is the table the base model was trained on ({trained_on.get('source')}); {hint}"]
    if eval_frame is None or label not in eval_frame.columns:
        return []
    from fairfix.data.labels import encode_labels

    known = eval_frame[label].notna()
    y_eval = encode_labels(eval_frame.loc[known, label], model.classes)
    acc_eval = float((model.predict_proba(eval_frame[known]).argmax(1) == y_eval).mean())
    if acc_data - acc_eval > MEMORISED_GAP:
        return [f"the base model is {acc_data:.1%} accurate on DATA but {acc_eval:.1%} on the --eval rows: it has "
                f"fitted DATA, and {hint}"]
    return []


def chosen_on_note(evaluated_on: str) -> str:
    """One line: without ``--eval`` the after-figures are on the rows the guard chose its setting on.

    Out-of-fold (or validation) predictions are held out from the adapters that made them, but
    the guard kept the best of its settings on these same rows: optimistic through selection.
    """
    return (f"the after-figures are on the rows the guard chose its setting from ({evaluated_on}): held out "
            "from the adapters, but the best of many settings on them, so optimistic; pass --eval TABLE (rows the "
            "correction never saw) for figures to trust")


def _default_minority_on_val(model: Any, frame: Any, label: str, group: str) -> list[Any]:
    """The group holding the base's worst (group, label) cell on ``frame``'s rows ([] when none has rows)."""
    from fairfix.detect.fit import default_minority

    try:
        return default_minority(frame, np.arange(len(frame)), model, label, group)[0]
    except errors.DataError:
        return []
