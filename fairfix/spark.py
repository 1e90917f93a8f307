"""fairfix on Spark: the counts on the cluster (``groupBy().count()``), the metrics on the driver.

``fairfix.spark.audit(df, label=..., pred=... | score=..., group=[...])`` and
``fairfix audit PATH --engine spark`` group the rows by (group columns, label,
prediction) on Spark and collect only the counts, one row per cell; the audit
then reads that counts table as it reads any (docs/scale.md), so the report is
the one the local audit gives for the same rows, bit for bit.

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

from fairfix import errors


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
        As for :func:`fairfix.audit` (``pred`` or ``score``; a model cannot run here:
        score the rows first, for example with ``mapInPandas``).
    **options
        Any other keyword of :func:`fairfix.audit`: ``threshold``, ``positive``,
        ``counts`` (the DataFrame is a counts table), ``bootstrap``, ``ci``, ``seed``,
        ``min_group_size``, ``fail_on``, ``dropna``, ``keep_missing_groups``.

    Returns
    -------
    fairfix.AuditReport
    """
    from fairfix._audit import audit as run_audit

    if options.get("model") is not None:
        raise errors.UsageError("fairfix.spark.audit takes pred= or score=; score the rows on Spark first")
    options.pop("engine", None)
    return run_audit(df, label=label, group=group, pred=pred, score=score, engine="spark", **options)
