"""fairfix: audit classifiers for group disparities and correct them with FairNet.

The public surface is small and re-exported here lazily, so that ``import fairfix``
(and the ``fairfix audit`` command) never pays for torch or pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "audit", "AuditReport", "ConfusionCounts", "FairfixError", "load", "train", "compare",
           "Model", "Bundle", "Detector", "Comparison", "FairNet"]

# ``fairfix.detect``, ``fairfix.correct`` and ``fairfix.predict`` are packages of the library: those
# steps are methods of Model (model.detect(...), model.correct(...), model.predict(...)) and
# functions of fairfix.api.
_LAZY = {
    "audit": ("fairfix._audit", "audit"),
    "load": ("fairfix.api", "load"),
    "train": ("fairfix.api", "train"),
    "compare": ("fairfix.api", "compare"),
    "Model": ("fairfix.api", "Model"),
    "Bundle": ("fairfix.api", "Bundle"),
    "Comparison": ("fairfix.api", "Comparison"),
    "Detector": ("fairfix.detect.fit", "Detector"),
    "FairNet": ("fairfix.correct.estimator", "FairNet"),
    "AuditReport": ("fairfix.report.audit", "AuditReport"),
    "ConfusionCounts": ("fairfix.metrics.counts", "ConfusionCounts"),
    "FairfixError": ("fairfix.errors", "FairfixError"),
}

if TYPE_CHECKING:
    from fairfix._audit import audit
    from fairfix.api import Bundle, Comparison, Model, compare, load, train
    from fairfix.correct.estimator import FairNet
    from fairfix.detect.fit import Detector
    from fairfix.errors import FairfixError
    from fairfix.metrics.counts import ConfusionCounts
    from fairfix.report.audit import AuditReport


def __getattr__(name: str) -> Any:
    if name in ("spark", "mlflow"):  # fairfix.spark (pyspark imported only when it runs), fairfix.mlflow
        import importlib

        return importlib.import_module(f"fairfix.{name}")
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fairfix' has no attribute {name!r}")
