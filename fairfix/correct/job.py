"""One correction job, one attribute or several: what ``fairfix correct`` and the Python API both run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fairfix import errors
from fairfix.correct.config import CorrectConfig


def correct_job(
    data: Any,
    model: Any,
    *,
    label: str,
    groups: str | Sequence[str],
    minority: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
    modes: Sequence[str] = ("auto",),
    detector: Any = None,
    config: CorrectConfig | None = None,
    eval_data: Any = None,
    input_format: str | None = None,
    progress: Callable[..., None] | None = None,
    checkpoint: Path | None = None,
    resume: bool | str = False,
) -> tuple[Any, dict[str, Any]]:
    """Correct ``model`` for one sensitive column or several in turn; the corrected model and its reports.

    One column: :func:`fairfix.correct.run.correct`; several: :func:`fairfix.correct.progressive.correct_many`.

    ``modes``: the detector's label mode, one for all columns or one per column.  ``minority``:
    values of the one column, or with several columns ``{column: [values]}`` or ``COLUMN=VALUE``
    strings (``--minority``).  ``detector`` (a :class:`~fairfix.detect.fit.Detector` or its
    folder), ``checkpoint`` and ``resume`` apply to one column only.

    Raises
    ------
    fairfix.errors.UsageError
        A repeated column, modes that do not align with the columns, or an option that several
        columns do not take.
    """
    from fairfix.detect.fit import DetectorConfig

    config = config or CorrectConfig()
    groups, modes, checked = check_job(groups, modes, minority, detector=detector, resume=resume)
    if len(groups) > 1:
        from fairfix.correct.progressive import correct_many

        return correct_many(data, model, label=label, groups=groups, minority=checked,
                            detector_configs=[DetectorConfig(mode=m, seed=config.seed) for m in modes], config=config,
                            eval_data=eval_data, input_format=input_format, progress=progress)
    from fairfix.correct.run import correct

    return correct(data, model, label=label, group=groups[0], minority=checked,
                   detector=str(detector) if isinstance(detector, str | Path) else detector,
                   detector_config=DetectorConfig(mode=modes[0], seed=config.seed), config=config,
                   eval_data=eval_data, input_format=input_format, progress=progress, checkpoint=checkpoint,
                   resume=resume)


def check_job(groups: str | Sequence[str], modes: Sequence[str], minority: Any, *, detector: Any = None,
              resume: bool | str = False) -> tuple[list[str], list[str], Any]:
    """The columns, modes and minority values of a job, checked before any work (:func:`correct_job`).

    The minority comes back as ``{column: [values]}`` for several columns, else as a list.
    """
    groups = [groups] if isinstance(groups, str) else list(groups)
    modes = list(modes) or ["auto"]
    if not groups:
        raise errors.UsageError("--group: name at least one sensitive column")
    if len(groups) > 1:
        from fairfix.correct.progressive import check_groups, parse_minority

        check_groups(groups, {"--mode": modes})
        if detector is not None:
            raise errors.UsageError("--detector: with several --group a detector is fitted per attribute, in turn, "
                                    "on the model corrected so far; drop --detector")
        if resume:
            raise errors.UsageError("--resume: not available with several --group")
        by_group = ({str(k): list(v) for k, v in minority.items()} if isinstance(minority, Mapping)
                    else parse_minority(minority, groups))
        return groups, modes, by_group
    if len(modes) > 1:
        raise errors.UsageError(f"--mode: {len(modes)} values for one --group")
    if isinstance(minority, Mapping):
        minority = list(minority.get(groups[0]) or [])
    return groups, modes, list(minority) if minority else None


def parse_tau(tau: str | float | None) -> float | None:
    """``--tau``: ``auto`` (None: the guard sweeps it) or a number."""
    if tau is None or tau == "auto":
        return None
    try:
        return float(tau)
    except ValueError:
        raise errors.UsageError(f"--tau {tau!r}: expected 'auto' or a number in [0, 1]") from None
