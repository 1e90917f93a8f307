"""MLflow tracking of audits, corrections and recipe runs (the ``mlflow`` extra).

Where runs go is MLflow's own business: ``MLFLOW_TRACKING_URI``,
``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID`` and ``MLFLOW_RUN_ID`` are read
by MLflow itself.  What is logged:

- summary metrics under their JSON names (``accuracy``, ``worst_group_accuracy``, ...;
  for a comparison ``before.KEY``, ``after.KEY`` and ``delta.KEY``);
- per-group metrics named by the group, ``group/sex:Female/accuracy`` (intersections
  ``group/sex:Female/race:Black/accuracy``; for a comparison ``before.group/...`` and
  ``after.group/...``);
- each gate as ``gate/EXPR/value``, ``gate/EXPR/tripped`` and
  ``gate/EXPR/insufficient_evidence`` (0 or 1), with ``<`` written ``lt`` and so on;
- the JSON reports and a bundle as artifacts, and the bundle as an MLflow model with a pyfunc
  flavour (:func:`log_bundle_model`, ``fairfix.mlflow``);
- for a correction, each epoch's training loss and hinge-open share and the best
  validation accuracy / worst-group accuracy of that epoch as steps (read from the
  correction record after the fit; step 0 is the base model's validation figures).

Nothing here prints; errors are :class:`fairfix.errors.UsageError` (exit 2 on the CLI).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fairfix import __version__, errors
from fairfix.mlflow import MLFLOW_MISSING as MLFLOW_MISSING  # the message of a missing extra, as before
from fairfix.mlflow import import_mlflow as _mlflow

_BAD = re.compile(r"[^\w\-. :/]")
_OPS = (("<=", " le "), (">=", " ge "), ("<", " lt "), (">", " gt "))


def enabled(flag: bool = False) -> bool:
    """True when ``--mlflow`` was given or ``FAIRFIX_MLFLOW`` is set (to anything but empty or 0)."""
    return flag or os.environ.get("FAIRFIX_MLFLOW", "") not in ("", "0", "false", "False")


def check_available() -> None:
    """Fail before any work when MLflow is not installed or its tracking URI names no usable store.

    Only the store's client is built (a server is not contacted here).

    Raises
    ------
    fairfix.errors.UsageError
        MLflow cannot be imported, or the tracking URI is not one MLflow can use.
    """
    mlflow = _mlflow()
    try:
        mlflow.tracking.MlflowClient()
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; the user needs one line
        raise errors.UsageError(f"--mlflow: tracking URI {mlflow.get_tracking_uri()!r}: "
                                f"{' '.join(str(exc).split())}") from exc


def metric_name(name: str) -> str:
    """``name`` with the characters MLflow refuses replaced (``<`` -> `` lt ``, others -> ``_``)."""
    for op, word in _OPS:
        name = name.replace(op, word)
    return _BAD.sub("_", " ".join(name.split()))


def group_key(group: Mapping[str, Any]) -> str:
    """``sex:Female/race:Black``: a group as a metric-name path."""
    return "/".join(f"{k}:{v}" for k, v in group.items())


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(float(x)) else None


def audit_metrics(doc: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The metrics of a ``fairfix.audit/1`` document: summary, per group, gates."""
    out: dict[str, float] = {}
    for k, v in (doc.get("summary") or {}).items():
        if (f := _finite(v)) is not None:
            out[metric_name(f"{prefix}{k}")] = f
    for g in doc.get("groups") or []:
        base = f"{prefix}group/{group_key(g['group'])}"
        for k, v in g.items():
            if (f := _finite(v)) is not None:
                out[metric_name(f"{base}/{k}")] = f
    out.update(gate_metrics(doc.get("gates") or []))
    return out


def gate_metrics(gates: Any) -> dict[str, float]:
    """``gate/EXPR/value``, ``.../tripped`` and ``.../insufficient_evidence`` for each gate."""
    out: dict[str, float] = {}
    for g in gates:
        base = metric_name(f"gate/{g['expr']}")
        if (f := _finite(g.get("value"))) is not None:
            out[f"{base}/value"] = f
        out[f"{base}/tripped"] = float(bool(g.get("tripped")))
        out[f"{base}/insufficient_evidence"] = float(bool(g.get("insufficient_evidence")))
    return out


def compare_metrics(doc: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of a ``fairfix.compare/1`` document: before, after, delta, detector, gates."""
    out = {k: v for k, v in audit_metrics({**doc["before"], "gates": []}, "before.").items()}
    out.update(audit_metrics({**doc["after"], "gates": []}, "after."))
    for k, v in (doc.get("delta") or {}).items():
        if (f := _finite(v)) is not None:
            out[metric_name(f"delta.{k}")] = f
    det = doc.get("detector") or {}
    for k in ("tpr", "fpr", "activation_rate"):
        if (f := _finite(det.get(k))) is not None:
            out[f"detector.{k}"] = f
    if (f := _finite(doc.get("tau"))) is not None:
        out["tau"] = f
    out.update(gate_metrics(doc.get("gates") or []))
    return out


def epoch_steps(record: Mapping[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """Series of a correction over its optimizer steps: ``{metric: [(step, value), ...]}``.

    ``train/loss`` and ``train/hinge_open_share`` per interval of ``eval_every`` steps; the
    held-out figures of each candidate budget's best setting (the one the guard would prefer:
    passing rows first, then highest worst-group accuracy, accuracy, lowest
    activation) as ``val/accuracy`` and ``val/worst_group_accuracy``, with the base
    model's at step 0.
    """
    series: dict[str, list[tuple[int, float]]] = {}

    def add(name: str, step: int, value: Any) -> None:
        if (f := _finite(value)) is not None:
            series.setdefault(name, []).append((step, f))

    every = int((record.get("config") or {}).get("eval_every") or 1)  # the loss is kept per interval of steps
    loss = record.get("loss_history") or []
    for i, v in enumerate(loss):
        add("train/loss", (i + 1) * every, v)
    corr = record.get("correction") or {}
    for i, v in enumerate(corr.get("hinge_open_history") or []):
        add("train/hinge_open_share", (i + 1) * every, v)
    base = record.get("base_validation") or {}
    add("val/accuracy", 0, base.get("accuracy"))
    add("val/worst_group_accuracy", 0, base.get("worst_group_accuracy"))
    plan = corr.get("groups")
    rows = [r for r in record.get("sweep") or [] if plan is None or r.get("groups", plan) == plan]
    for step in sorted({int(r["steps"]) for r in rows if "steps" in r}):
        cands = [r for r in rows if r.get("steps") == step]
        best = max(cands, key=lambda r: (bool(r.get("passes_guard")), r.get("worst_group_accuracy") or 0.0,
                                         r.get("accuracy") or 0.0, -(r.get("activation_rate") or 0.0)))
        add("val/accuracy", step, best.get("accuracy"))
        add("val/worst_group_accuracy", step, best.get("worst_group_accuracy"))
    return series


class Run:
    """An active MLflow run: log metrics, steps, params, JSON documents and directories."""

    def __init__(self, mlflow: Any):
        self._mlflow = mlflow
        self.run_id: str = mlflow.active_run().info.run_id

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        """Log ``values`` (one batch)."""
        if values:
            self._mlflow.log_metrics(dict(values), step=step)

    def steps(self, series: Mapping[str, list[tuple[int, float]]]) -> None:
        """Log each ``(step, value)`` of each series."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, s) for k, pts in series.items() for s, v in pts]
        if batch:
            self._mlflow.tracking.MlflowClient().log_batch(self.run_id, metrics=batch)

    def params(self, values: Mapping[str, Any]) -> None:
        """Log ``values`` as parameters (JSON for lists and dicts; long values cut to MLflow's limit)."""
        clean = {}
        for k, v in values.items():
            if v is None:
                continue
            text = v if isinstance(v, str) else json.dumps(v, default=str)
            clean[metric_name(k)] = text[:6000]
        if clean:
            self._mlflow.log_params(clean)

    def json(self, doc: Any, name: str) -> None:
        """Log ``doc`` as the JSON artifact ``name`` (under ``fairfix/``)."""
        self._mlflow.log_text(json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n", f"fairfix/{name}")

    def file(self, path: str | Path, folder: str = "fairfix") -> None:
        """Log the file ``path`` as an artifact in ``folder``."""
        self._mlflow.log_artifact(str(path), artifact_path=folder)

    def directory(self, path: str | Path, name: str) -> None:
        """Log the directory ``path`` as the artifact folder ``name``."""
        self._mlflow.log_artifacts(str(path), artifact_path=name)

    def tags(self, values: Mapping[str, Any]) -> None:
        """Set run tags."""
        self._mlflow.set_tags({k: str(v) for k, v in values.items()})


@contextmanager
def start(command: str) -> Iterator[Run]:
    """Start (or, with ``MLFLOW_RUN_ID``, resume) an MLflow run for ``command``; nested in an active one.

    Raises
    ------
    fairfix.errors.UsageError
        MLflow is not installed, or the tracking server cannot be used.
    """
    mlflow = _mlflow()
    try:
        ctx = mlflow.start_run(run_name=None if os.environ.get("MLFLOW_RUN_ID") else f"fairfix {command}",
                               nested=mlflow.active_run() is not None)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; the user needs one line
        raise errors.UsageError(f"--mlflow: cannot start a run at {mlflow.get_tracking_uri()}: "
                                f"{' '.join(str(exc).split())}") from exc
    with ctx:
        run = Run(mlflow)
        try:
            run.tags({"fairfix.command": command, "fairfix.version": __version__})
            yield run
        except errors.FairfixError:
            raise
        except Exception as exc:  # noqa: BLE001 - a store or server that fails mid-way: one line, exit 2
            raise errors.UsageError(f"--mlflow: logging to {mlflow.get_tracking_uri()} failed: "
                                    f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc


def log_audit(run: Run, doc: Mapping[str, Any]) -> None:
    """An audit: its settings as params, its metrics and gates, the JSON as ``fairfix/audit.json``."""
    settings = doc.get("settings") or {}
    run.params({"label": doc.get("label"), "group_columns": doc.get("group_columns"),
                "positive_label": doc.get("positive_label"), "source": settings.get("source"),
                "bootstrap": settings.get("bootstrap"), "ci": settings.get("ci"), "seed": settings.get("seed"),
                "min_group_size": settings.get("min_group_size")})
    run.metrics(audit_metrics(doc))
    run.tags({"fairfix.gates_tripped": sum(bool(g.get("tripped")) for g in doc.get("gates") or [])})
    run.json(doc, "audit.json")


def log_compare(run: Run, doc: Mapping[str, Any], name: str = "compare.json") -> None:
    """A comparison: before/after/delta metrics, detector, gates; the JSON as ``fairfix/NAME``."""
    run.metrics(compare_metrics(doc))
    run.tags({"fairfix.gates_tripped": sum(bool(g.get("tripped")) for g in doc.get("gates") or []),
              "fairfix.adapter_enabled": doc.get("adapter_enabled")})
    run.json(doc, name)


def log_correction(run: Run, record: Mapping[str, Any], bundle: str | Path | None, *, prefix: str = "") -> None:
    """A correction's config as params, its per-epoch steps, and the bundle under ``bundle/``.

    ``prefix`` names one attribute of a progressive correction (``"race/"``): its params and
    series are ``correct.race/...`` and ``race/train/loss``, ``race/val/accuracy``, ...
    """
    run.params({f"correct.{prefix}{k}": v for k, v in (record.get("config") or {}).items()})
    run.steps({metric_name(f"{prefix}{name}"): series for name, series in epoch_steps(record).items()})
    if bundle is not None:
        run.directory(bundle, "bundle")


def log_bundle_model(run: Run, bundle: str | Path, data: Any = None) -> str:
    """The bundle as an MLflow model (``fairfix.mlflow.log_model``) in ``run``; its URI, also as a tag.

    ``data`` (the table the bundle was corrected on) gives the input example and so the
    signature's column types; stdin, nothing, or a table without the model's input columns (a
    recipe's templated text): an example made from the model itself.
    """
    from fairfix.mlflow import log_model

    example = None if data is None or (isinstance(data, str) and data == "-") else data
    try:
        info = log_model(bundle, input_example=example)
    except errors.DataError:  # a recipe's text column made from a template is not in its table
        if example is None:
            raise
        info = log_model(bundle)  # nothing was logged by the first call: it failed reading the table
    run.tags({"fairfix.model_uri": info.model_uri})
    return str(info.model_uri)


def log_attributes(run: Run, doc: Mapping[str, Any]) -> None:
    """A progressive correction's per-attribute figures: ``<group>/before.KEY``, ``after.KEY``, ``delta.KEY``."""
    values: dict[str, float] = {}
    for a in doc.get("attributes") or []:
        g = a["group"]
        for side in ("before", "after", "delta"):
            for key in ("accuracy", "worst_group_accuracy", "equalized_odds_difference"):
                if (f := _finite((a.get(side) or {}).get(key))) is not None:
                    values[metric_name(f"{g}/{side}.{key}")] = f
        for key in ("tpr", "fpr", "activation_rate"):
            if (f := _finite((a.get("detector") or {}).get(key))) is not None:
                values[metric_name(f"{g}/detector.{key}")] = f
    run.metrics(values)


def record_from_bundle(bundle: str | Path) -> dict[str, Any]:
    """The parts of a correction record that a bundle keeps (manifest and compare.json)."""
    b = Path(bundle)
    manifest = json.loads((b / "fairfix.json").read_text())
    rec = {k: manifest.get(k) for k in ("correction", "sweep", "base_validation", "config")}
    rec["loss_history"] = manifest.get("loss_history") or []
    return rec

