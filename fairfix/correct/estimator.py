"""``fairfix.FairNet``: the whole correction as a scikit-learn classifier (DESIGN.md section 6).

``FairNet(...).fit(X, y, sensitive_features=s)`` trains a base classifier (the tabular MLP of
``fairfix train``; or takes ``base=``, a trained torch module or fairfix model), fits the bias
detector and corrects the base under the no-loss guard -- the functions ``fairfix train`` and
``fairfix correct`` call.  ``predict`` / ``predict_proba`` run the corrected model: rows the
gate leaves alone get the base's outputs.  scikit-learn's conventions: keyword-only
``__init__`` that stores its parameters unchanged, ``fit`` returns ``self``, fitted attributes
end in ``_``, ``random_state`` makes a fit repeatable (same data, same seed, same
predictions on CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    check_random_state,
    column_or_1d,
    validate_data,
)

from fairfix import errors

LABEL = "__fairfix_label__"


class FairNet(ClassifierMixin, BaseEstimator):
    """FairNet: a base classifier with a detector-gated LoRA correction, as a scikit-learn estimator.

    Parameters
    ----------
    base
        None: train fairfix's tabular MLP on ``X`` (``hidden``, ``base_steps``).  A torch
        ``nn.Module`` trained already (numeric columns of ``X`` in, one logit per class of
        ``np.unique(y)`` out, in that order), or a fairfix model (``fairfix.load``): corrected
        as it is.  Never changed: the correction works on a copy.
    hidden, base_steps
        The MLP's hidden widths and its training budget in optimizer steps (``fairfix train
        --hidden --steps``).
    detector_mode
        The detector's labels: ``auto``, ``full``, ``partial`` (empty sensitive values) or ``none``.
    minority
        Disadvantaged group values (default: the group holding the base's worst (group, label) cell).
    rank, alpha, steps, eval_every, batch_size, lr, folds, max_accuracy_drop, guard_se
        ``fairfix correct``'s options of the same names (its defaults).
    random_state
        Seed of every split, initialisation and batch order (None: a fresh one per fit).

    Attributes
    ----------
    bundle_ : fairfix.Bundle
        The corrected model; ``bundle_.save(path)`` writes it for ``fairfix predict``/``audit``,
        ``bundle_.to_dict()`` is ``fairfix correct``'s JSON.
    base_ : fairfix.Model
        The base classifier.
    classes_, n_features_in_, feature_names_in_
        scikit-learn's (the last only when ``X`` has string column names).
    evidence_ : dict
        The guard's evidence (rows, folds, smallest cell) behind the chosen setting.
    report_ : dict
        The ``fairfix.compare/1`` document: before/after audits, detector, guard.
    enabled_ : bool
        Whether the guard shipped the adapter (False: predictions equal the base's).
    """

    def __init__(self, *, base: Any = None, hidden: Sequence[int] = (128, 64), base_steps: int = 2000,
                 detector_mode: str = "auto", minority: Sequence[Any] | None = None, rank: int = 8,
                 alpha: float = 16.0, steps: int = 400, eval_every: int = 50, batch_size: int = 64,
                 lr: float = 3e-3, folds: int = 5, max_accuracy_drop: float = 0.0, guard_se: float = 1.0,
                 random_state: int | None = None):
        self.base = base
        self.hidden = hidden
        self.base_steps = base_steps
        self.detector_mode = detector_mode
        self.minority = minority
        self.rank = rank
        self.alpha = alpha
        self.steps = steps
        self.eval_every = eval_every
        self.batch_size = batch_size
        self.lr = lr
        self.folds = folds
        self.max_accuracy_drop = max_accuracy_drop
        self.guard_se = guard_se
        self.random_state = random_state

    # -- scikit-learn ---------------------------------------------------------------------
    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        tags.input_tags.categorical = True  # a DataFrame's text columns go to the MLP's embeddings
        tags.input_tags.string = True
        return tags

    def fit(self, X: Any, y: Any, *, sensitive_features: Any) -> FairNet:  # noqa: N803 - scikit-learn's name
        """Train (or take) the base, fit the detector, correct under the guard; returns ``self``.

        ``sensitive_features``: one value per row (an empty value: unknown, for
        ``detector_mode="partial"``), or a DataFrame with one column per attribute (corrected in turn).
        """
        from fairfix.api import Bundle, Model
        from fairfix.correct.config import CorrectConfig
        from fairfix.correct.job import correct_job

        if y is None:
            raise ValueError("FairNet requires y to be passed, but the target y is None")
        frame = self._frame(X, reset=True)
        y = column_or_1d(y, warn=True)
        check_consistent_length(frame, y)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"y has {len(self.classes_)} class(es); FairNet needs at least two")
        groups = self._groups(sensitive_features, frame)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        features = list(frame.columns)
        base = self.base
        if base is None or _is_module(base):
            codes = np.searchsorted(self.classes_, y)  # labels 0..K-1: the model's classes follow classes_
            data = frame.assign(**{LABEL: codes}, **groups)
            if base is None:
                from fairfix.api import train

                self.base_ = train(data, label=LABEL, features=features, group=list(groups), seed=seed,
                                   hidden=list(self.hidden), steps=self.base_steps)
            else:
                self.base_ = Model.from_module(base, features=features, classes=list(range(len(self.classes_))))
        else:
            model = base if isinstance(base, Model) else Model(base)
            missing = [c for c in model.input_columns if c not in features]
            if missing:
                raise errors.DataError(f"base: reads column {missing[0]!r}, which X lacks")
            data = frame.assign(**{LABEL: y}, **groups)
            self.base_ = model
        self._order = self._class_order(self.base_.classes)
        config = CorrectConfig(rank=self.rank, alpha=self.alpha, steps=self.steps, eval_every=self.eval_every,
                               batch_size=self.batch_size, lr=self.lr, folds=self.folds,
                               max_accuracy_drop=self.max_accuracy_drop, guard_se=self.guard_se, seed=seed)
        names = list(groups)
        corrected, result = correct_job(data, self.base_.model, label=LABEL, groups=names,
                                        minority=list(self.minority) if self.minority is not None else None,
                                        modes=[self.detector_mode], config=config)
        self.bundle_ = Bundle(corrected, base=self.base_, result=result, label=LABEL, groups=names, config=config)
        self.report_ = result["compare"]
        self.evidence_ = self.report_.get("evidence")
        self.enabled_ = bool(corrected.enabled)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803 - scikit-learn's name
        """Class probabilities ``(rows, len(classes_))`` of the corrected model."""
        check_is_fitted(self, "bundle_")
        frame = self._frame(X, reset=False)
        return self.bundle_.model.predict_proba(frame)[:, self._order]

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803 - scikit-learn's name
        """The most probable class of each row (``fairfix predict``'s ``pred`` at threshold 0.5)."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    # -- helpers ----------------------------------------------------------------------------
    def _frame(self, X: Any, *, reset: bool) -> Any:  # noqa: N803 - scikit-learn's name
        """``X`` as a pandas DataFrame with string column names (``x0``, ``x1``... for an array)."""
        import pandas as pd

        if isinstance(X, pd.DataFrame):
            validate_data(self, X, reset=reset, skip_check_array=True)
            if len(X) == 0:
                raise ValueError("X has 0 rows; FairNet needs at least one")
            frame = X.reset_index(drop=True).copy()
            frame.columns = [str(c) for c in frame.columns]
            return frame
        arr = validate_data(self, X, reset=reset, dtype=np.float64, ensure_min_samples=1)
        return pd.DataFrame(arr, columns=[f"x{j}" for j in range(arr.shape[1])])

    def _groups(self, sensitive: Any, frame: Any) -> dict[str, Any]:
        """The sensitive columns (named ``__fairfix_group_<name>__``) as object arrays, None where empty."""
        import pandas as pd

        if sensitive is None:
            raise ValueError("fit needs sensitive_features= (one value per row): FairNet corrects a model for a "
                             "sensitive attribute")
        if isinstance(sensitive, pd.DataFrame):
            cols = {str(c): sensitive[c].to_numpy() for c in sensitive.columns}
        else:
            arr = np.asarray(sensitive, dtype=object)
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
            if arr.ndim != 1:
                raise ValueError(f"sensitive_features: expected one value per row, got shape {arr.shape}")
            cols = {str(getattr(sensitive, "name", None) or "group"): arr}
        out = {}
        for name, values in cols.items():
            if len(values) != len(frame):
                raise ValueError(f"sensitive_features: {len(values)} values for {len(frame)} rows")
            out[f"__fairfix_group_{name}__"] = np.array([None if pd.isna(v) else v for v in values], dtype=object)
        return out

    def _class_order(self, model_classes: Sequence[Any]) -> np.ndarray:
        """Column of the model's probabilities for each of ``classes_``."""
        if self.base is None or _is_module(self.base):
            return np.arange(len(self.classes_))
        names = [str(c) for c in model_classes]
        missing = [c for c in self.classes_ if str(c) not in names]
        if missing or len(names) != len(self.classes_):
            raise errors.DataError(f"base: its classes {list(model_classes)} are not y's {list(self.classes_)}")
        return np.array([names.index(str(c)) for c in self.classes_])


def _is_module(obj: Any) -> bool:
    from torch import nn

    return isinstance(obj, nn.Module)
