"""fairfix on Spark: the counts on the cluster (``groupBy().count()``), the metrics on the driver.

``fairfix.spark.predict(df, model)`` scores a Spark DataFrame with ``mapInPandas``:
the model or bundle directory is shipped to the executors once (``addFile``),
loaded once per Python worker with the checks of a local load, and applied in
the model's batches; its rows are those of ``fairfix predict``.

``fairfix.spark.audit(df, label=..., pred=... | score=... | model=..., group=[...])`` and
``fairfix audit PATH --engine spark`` group the rows by (group columns, label,
prediction) on Spark and collect only the counts, one row per cell; the audit
then reads that counts table as it reads any (docs/scale.md), so the report is
the one the local audit gives for the same rows, bit for bit.  With a model
(``--model``), the rows are first scored on the executors by :func:`predict`.

pyspark is an optional dependency (``pip install 'fairfix[spark]'``, Java 17);
it is imported only by the engine (``fairfix.data.spark``), only when it runs.

Reading files: Parquet and JSON Lines with Spark's own readers; CSV as text
(``inferSchema`` off) with fairfix's missing-value markers turned into nulls,
so values are normalised as the local CSV reader's are (one difference: Spark
does not tell a quoted ``"NA"`` from a bare ``NA``; both are missing).  Scores
are thresholded on Spark into 0.0 / 1.0 (an out-of-range score is kept, so the
audit names it), which the audit's own ``score >= threshold`` maps to the same
predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fairfix.data.spark_score import predict

__all__ = ["audit", "predict"]


def audit(
    df: Any,
    *,
    label: str,
    group: str | Sequence[str],
    pred: str | None = None,
    score: str | None = None,
    **options: Any,
) -> Any:
    """Audit a Spark DataFrame (or a list of them) on Spark; the report of ``fairfix.audit``.

    Parameters
    ----------
    df
        A pyspark DataFrame, or a list of them (audited as one table).
    label, group, pred, score
        As for :func:`fairfix.audit`: ``pred`` or ``score``, or ``model=``.
    **options
        Any other keyword of :func:`fairfix.audit`: ``model`` (a model or bundle directory, or
        a loaded :class:`fairfix.models.Model`: the rows are scored on Spark with
        :func:`predict`, then counted there), ``threshold``, ``positive``, ``counts`` (the
        DataFrame is a counts table), ``bootstrap``, ``ci``, ``seed``, ``min_group_size``,
        ``fail_on``, ``dropna``, ``keep_missing_groups``.

    Returns
    -------
    fairfix.AuditReport
    """
    from fairfix._audit import audit as run_audit

    model = options.pop("model", None)
    if model is not None and not hasattr(model, "predict_with_extras"):
        from fairfix.models import load_model

        model = load_model(model)
    options.pop("engine", None)
    return run_audit(df, label=label, group=group, pred=pred, score=score, model=model, engine="spark", **options)
