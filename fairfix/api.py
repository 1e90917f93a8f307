"""The Python API: the whole job without the CLI (README "From Python"; DESIGN.md section 6).

Every step calls the library function its command calls, so each result holds what the
command prints: ``to_dict()`` is the JSON object and ``to_json()`` the text that
``--format json`` writes (``fairfix train``, ``detect``, ``correct``, ``audit``, ``compare``);
:meth:`Model.predict` returns the rows ``fairfix predict`` writes, as a pandas DataFrame.
Artifacts (a model, a detector, a bundle) have ``save(path)`` and ``load(path)``.

``fairfix.detect``, ``fairfix.correct`` and ``fairfix.predict`` are the packages that hold
the library, so those steps are methods of :class:`Model` (and functions of this module):

>>> model = fairfix.train("adult:train", label="income", group=["sex"], steps=300)   # doctest: +SKIP
>>> bundle = model.correct("adult:test", label="income", group="sex")                 # doctest: +SKIP
>>> bundle.predict(frame)                                                              # doctest: +SKIP

A torch ``nn.Module`` is accepted wherever a factory is named: ``fairfix.train(...,
factory=module)`` trains copies of it, ``Model.from_module(module, features=[...])`` wraps a
trained one, and ``fairfix.load(weights, factory=module)`` loads a state dict into a copy.
Nothing here prints; progress callbacks are optional.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairfix import errors

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from torch import nn

    from fairfix.detect.fit import Detector
    from fairfix.report.audit import AuditReport
    from fairfix.training import Trained

__all__ = ["Bundle", "Comparison", "Model", "compare", "correct", "detect", "load", "predict", "train"]


def _inner(model: Any) -> Any:
    """The library model behind an API object (or the library model itself)."""
    return model.model if isinstance(model, Model) else model


class Model:
    """A classifier fairfix can audit, correct and run: loaded, trained, or built from a torch module.

    Attributes
    ----------
    model
        The library model (:class:`fairfix.models.base.Model`): its torch ``module``, ``encode``,
        ``forward``, ``representation``.
    """

    def __init__(self, model: Any, *, trained: Trained | None = None, summary: dict[str, Any] | None = None):
        self.model = model
        self._trained = trained
        self._summary = summary

    # -- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, factory: str | nn.Module | None = None, features: Sequence[str] | None = None,
             text_column: str | None = None, base: str | Path | None = None) -> Model:
        """Load a model directory (fairfix or Hugging Face), a state dict with ``factory``, or a bundle.

        A bundle comes back as a :class:`Bundle` (its base loaded and its sha256 checked).
        """
        from fairfix.models import load_model

        loaded = load_model(path, factory=factory, features=list(features) if features else None,
                            text_column=text_column, base=base)
        if (loaded.manifest or {}).get("kind") == "bundle":
            return Bundle._from_disk(loaded, Path(path))
        return cls(loaded)

    @classmethod
    def from_module(cls, module: nn.Module, *, features: Sequence[str], classes: Sequence[Any] | None = None,
                    positive: Any = None, factory: str | None = None) -> Model:
        """A trained torch module over numeric ``features`` (a copy: corrections never change ``module``).

        ``classes``: the label values in logit order (default 0..C-1; one logit is binary 0/1);
        ``factory``: what its saved manifest names (default: the module's class).
        """
        from fairfix.models.factory import module_model

        return cls(module_model(module, features=features, classes=classes, positive=positive, factory=factory))

    # -- what it is -----------------------------------------------------------------------
    @property
    def classes(self) -> list[Any]:
        """Label values in the order of ``predict_proba``'s columns."""
        return list(self.model.classes)

    @property
    def positive(self) -> Any:
        """The positive label of a binary model (None for multiclass)."""
        return self.model.positive

    @property
    def input_columns(self) -> list[str]:
        """The table columns the model reads."""
        return list(self.model.input_columns)

    @property
    def path(self) -> Path | None:
        """Where the model was loaded from or saved to (None while it lives in memory only)."""
        return self.model.path

    def to_dict(self) -> dict[str, Any]:
        """``fairfix train``'s summary for a trained model; else what reports record about the model.

        The summary's ``model`` and ``files`` are filled once the model is saved; a loaded model
        gives its kind, path, sha256, classes and positive label.
        """
        if self._trained is not None:
            if self._summary is not None:
                return self._summary
            from fairfix.training import train_summary

            return train_summary(self._trained, "", {"files": {}}) | {"model": None}
        return self.model.describe()

    def to_json(self) -> str:
        """:meth:`to_dict` as ``fairfix train --format json`` prints it."""
        from fairfix.report.render import summary_json

        return summary_json(self.to_dict())

    def __repr__(self) -> str:
        where = f" at {self.path}" if self.path else " (in memory)"
        return f"<fairfix.{type(self).__name__} {self.model.kind}{where}: classes {self.classes}>"

    # -- artifacts ------------------------------------------------------------------------
    def save(self, path: str | Path, *, force: bool = False) -> Model:
        """Write the model directory (a ``fairfix.model/1`` artifact); returns ``self``, now at ``path``."""
        self._write(Path(path), force)
        return self

    def _write(self, path: Path, force: bool) -> dict[str, Any]:
        """Write the model to ``path`` and point it there; its manifest."""
        from fairfix.artifacts import read_manifest
        from fairfix.training import save_trained

        if self._trained is not None:
            self._summary = save_trained(self._trained, path, force=force)
            return self.model.manifest
        m = self.model
        if not hasattr(m, "save"):
            raise errors.UsageError(f"a {m.kind} model cannot be saved")
        recorded = m.manifest or {}
        m.save(path, config=recorded.get("config") or {}, training=recorded.get("training") or {}, force=force)
        manifest = read_manifest(path)
        m.path, m.digest, m.manifest = path, manifest["digest"], manifest
        return manifest

    # -- the job ----------------------------------------------------------------------------
    def predict(self, data: Any, *, id_column: str | None = None, threshold: float | None = None,
                keep: Sequence[str] = (), keep_all: bool = False, input_format: str | None = None) -> pd.DataFrame:
        """The rows ``fairfix predict`` writes, as a pandas DataFrame.

        ``id_column`` (else ``row``), ``keep`` columns, ``score`` (per class: ``score_<class>``),
        ``pred``, and for a bundle ``risk`` and ``corrected``.
        """
        return predict(data, self, id_column=id_column, threshold=threshold, keep=keep, keep_all=keep_all,
                       input_format=input_format)

    def predict_proba(self, data: Any, *, input_format: str | None = None) -> np.ndarray:
        """Class probabilities ``(rows, classes)`` in the order of :attr:`classes`."""
        from fairfix.data.frames import read_frame

        return self.model.predict_proba(read_frame(data, None, input_format))

    def audit(self, data: Any, *, label: str, group: str | Sequence[str], **options: Any) -> AuditReport:
        """``fairfix audit DATA --model THIS``: :func:`fairfix.audit` with this model's predictions."""
        import fairfix

        return fairfix.audit(data, label=label, group=group, model=self.model, **options)

    def detect(self, data: Any, **options: Any) -> Detector:
        """``fairfix detect``: fit a bias detector on this model's representation (:func:`detect`)."""
        return detect(data, self, **options)

    def correct(self, data: Any, *, label: str, group: str | Sequence[str], **options: Any) -> Bundle:
        """``fairfix correct``: FairNet under the no-loss guard (:func:`correct`)."""
        return correct(data, self, label=label, group=group, **options)


class Bundle(Model):
    """A corrected model (FairNet bundle): the base, its detector(s), the adapter(s) and the reports.

    :meth:`to_dict` is the ``fairfix.compare/1`` document ``fairfix correct`` prints (before and
    after audits, detector, guard, evidence).  :meth:`save` writes the bundle directory that
    ``fairfix predict --model``, ``fairfix audit --model`` (and an MLflow model) load; a base
    that lives in memory only is written inside it (``base/``).
    """

    def __init__(self, model: Any, *, base: Model, result: dict[str, Any], label: str | None = None,
                 groups: Sequence[str] = (), config: Any = None):
        super().__init__(model)
        self.base = base
        self._result = result
        self._label, self._groups, self._config = label, list(groups), config

    @classmethod
    def _from_disk(cls, model: Any, path: Path) -> Bundle:
        import json

        result = {}
        for name in ("before", "after", "compare"):
            f = path / f"{name}.json"
            result[name] = json.loads(f.read_text()) if f.is_file() else None
        return cls(model, base=Model(model.base), result=result)

    @classmethod
    def load(cls, path: str | Path, *, factory: str | nn.Module | None = None, features: Sequence[str] | None = None,
             text_column: str | None = None, base: str | Path | None = None) -> Bundle:
        """Load a bundle directory (its base from the recorded path, or ``base``; sha256 checked)."""
        loaded = Model.load(path, factory=factory, features=features, text_column=text_column, base=base)
        if not isinstance(loaded, Bundle):
            raise errors.ModelError(f"{path}: is a model, not a FairNet bundle")
        return loaded

    @property
    def detector(self) -> Detector | None:
        """The bias detector (None for a bundle of several attributes: see ``model.attributes``)."""
        return getattr(self.model, "detector", None)

    @property
    def enabled(self) -> bool:
        """Whether the guard shipped the adapter (False: the outputs equal the base model's)."""
        return bool(self.model.enabled)

    @property
    def evidence(self) -> dict[str, Any] | None:
        """The guard's evidence (rows, folds, smallest cell) from the comparison document."""
        doc = self._result.get("compare") or {}
        return doc.get("evidence")

    def to_dict(self) -> dict[str, Any]:
        """The ``fairfix.compare/1`` document (what ``fairfix correct --format json`` prints)."""
        return self._result["compare"]

    def to_json(self) -> str:
        """:meth:`to_dict` as ``fairfix correct --format json`` prints it."""
        return Comparison(self.to_dict()).to_json()

    def save(self, path: str | Path, *, force: bool = False) -> Bundle:
        """Write the bundle directory; returns ``self``, now loaded from ``path``'s files."""
        from fairfix.artifacts import read_manifest
        from fairfix.correct.bundle import save_correction

        if self._config is None:
            raise errors.UsageError(f"this bundle was loaded from {self.path}; it is saved already (copy the folder)")
        base = self.base
        write_base = None
        if base.path is None:  # trained or built in memory: the bundle holds it

            def write_base(folder: Path) -> dict[str, Any]:
                return base._write(folder, False)

        save_correction(path, self.model, self._result, label=str(self._label), groups=self._groups,
                        config=self._config, force=force, write_base=write_base)
        manifest = read_manifest(path)
        self.model.path, self.model.digest, self.model.manifest = Path(path), manifest["digest"], manifest
        if write_base is not None:  # the base now lives in the bundle's folder
            from fairfix.correct.bundle import EMBEDDED_BASE

            base.model.path = Path(path) / EMBEDDED_BASE
            if base._summary is not None:
                base._summary["model"] = str(base.model.path)
        return self


class Comparison:
    """A ``fairfix.compare/1`` document: two audits side by side, deltas, gates."""

    def __init__(self, doc: dict[str, Any]):
        self.doc = doc

    @property
    def tripped(self) -> list[dict[str, Any]]:
        """The ``fail_on`` gates that tripped (``fairfix compare`` exits 1 when any did)."""
        return [g for g in self.doc.get("gates") or [] if g.get("tripped")]

    def to_dict(self) -> dict[str, Any]:
        """The document (what ``fairfix compare --format json`` prints)."""
        return self.doc

    def to_json(self) -> str:
        """The document as ``fairfix compare --format json`` prints it."""
        from fairfix.report.compare import render_compare
        from fairfix.report.render import Format

        return render_compare(self.doc, Format.json)

    def to_markdown(self) -> str:
        """The tables ``fairfix compare --format markdown`` prints."""
        from fairfix.report.compare import render_compare
        from fairfix.report.render import Format

        return render_compare(self.doc, Format.markdown)


# -- the steps as functions ------------------------------------------------------------------


def load(path: str | Path, *, factory: str | nn.Module | None = None, features: Sequence[str] | None = None,
         text_column: str | None = None, base: str | Path | None = None) -> Model:
    """Load a model or a bundle (:meth:`Model.load`)."""
    return Model.load(path, factory=factory, features=features, text_column=text_column, base=base)


def train(data: Any, *, label: str, features: Sequence[str] | str | None = None, exclude: Sequence[str] = (),
          group: str | Sequence[str] = (), factory: str | nn.Module | None = None, seed: int = 0,
          progress: Callable[..., None] | None = None, **options: Any) -> Model:
    """``fairfix train`` in memory: the baseline classifier (:func:`fairfix.training.fit_model`'s options).

    ``group`` columns are left out of the features (as ``--group``); ``factory`` is
    ``package.module:function`` or an ``nn.Module`` (copies of it are trained).  Save it with
    :meth:`Model.save`; :meth:`Model.to_dict` is then ``fairfix train --format json``'s summary.
    """
    from fairfix.training import fit_model

    groups = [group] if isinstance(group, str) else list(group)
    trained = fit_model(data, label=label, features=features, exclude=exclude, groups=groups, factory=factory,
                        seed=seed, progress=progress, **options)
    return Model(trained.model, trained=trained)


def detect(data: Any, model: Any, *, group: str | None = None, minority: Sequence[Any] | None = None,
           label: str | None = None, eval_group: str | None = None, mode: str = "auto", layer: str | None = None,
           seed: int = 0, input_format: str | None = None, progress: Callable[..., None] | None = None,
           **options: Any) -> Detector:
    """``fairfix detect``: a bias detector for ``model`` (options: :class:`fairfix.detect.fit.DetectorConfig`).

    :meth:`~fairfix.detect.fit.Detector.to_dict` is the ``fairfix.detect/1`` report;
    ``save(path)`` / ``Detector.load(path, model)`` write and read its directory.
    """
    from fairfix.detect.fit import DetectorConfig, fit_detector

    config = DetectorConfig(mode=mode, layer=layer, seed=seed, **options)
    return fit_detector(data, _inner(model), group=group, minority=list(minority) if minority else None,
                        label=label, eval_group=eval_group, config=config, input_format=input_format,
                        progress=progress)


def correct(data: Any, model: Any, *, label: str, group: str | Sequence[str],
            minority: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
            mode: str | Sequence[str] = "auto", detector: Any = None, eval_data: Any = None,
            tau: str | float | None = "auto", seed: int = 0, input_format: str | None = None,
            progress: Callable[..., None] | None = None, **options: Any) -> Bundle:
    """``fairfix correct``: FairNet's adapter under the no-loss guard; the :class:`Bundle` (not yet saved).

    ``group``: one sensitive column, or several corrected in turn; ``options``: the fields of
    :class:`fairfix.correct.config.CorrectConfig` (``rank``, ``steps``, ``folds``,
    ``max_accuracy_drop``, ``guard_se``...), with the CLI's defaults.  ``detector``: a
    :class:`~fairfix.detect.fit.Detector` or its folder (default: one is fitted).
    """
    from fairfix.correct.config import CorrectConfig
    from fairfix.correct.job import check_job, correct_job, parse_tau

    base = model if isinstance(model, Model) else Model(model)
    if isinstance(base, Bundle):
        raise errors.UsageError("model: is a FairNet bundle, not a base model; correct its base (bundle.base)")
    modes = [mode] if isinstance(mode, str) else list(mode)
    groups, modes, minority = check_job(group, modes, minority, detector=detector)
    config = CorrectConfig(tau=parse_tau(tau), seed=seed, **options)
    corrected, result = correct_job(data, base.model, label=label, groups=groups, minority=minority, modes=modes,
                                    detector=detector, config=config, eval_data=eval_data,
                                    input_format=input_format, progress=progress)
    return Bundle(corrected, base=base, result=result, label=label, groups=groups, config=config)


def predict(data: Any, model: Any, *, id_column: str | None = None, threshold: float | None = None,
            keep: Sequence[str] = (), keep_all: bool = False, input_format: str | None = None) -> pd.DataFrame:
    """``fairfix predict`` into a pandas DataFrame (:func:`fairfix.predict.predict_frame`)."""
    from fairfix.predict import predict_frame

    return predict_frame(data, _inner(model), id_column=id_column, threshold=threshold, keep=keep,
                         keep_all=keep_all, input_format=input_format)


def compare(before: Any, after: Any, *, fail_on: Sequence[str] = ()) -> Comparison:
    """``fairfix compare``: two audits (:class:`~fairfix.report.audit.AuditReport`, dicts or JSON files)."""
    from fairfix.report.compare import build_compare, read_audit

    def doc(x: Any) -> dict[str, Any]:
        if hasattr(x, "to_dict") and not isinstance(x, Mapping):
            return x.to_dict()
        return dict(x) if isinstance(x, Mapping) else read_audit(x)

    return Comparison(build_compare(doc(before), doc(after), fail_on=fail_on))
