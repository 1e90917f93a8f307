"""Percentile bootstrap from confusion counts.

Each group's rows are resampled within the group: a multinomial draw of the
group's size over its own (true, predicted) cell frequencies.  That is the same
distribution as resampling its rows, but costs O(groups x resamples x cells)
instead of O(rows x resamples), so 1,000 resamples take milliseconds at any row
count.
"""

from __future__ import annotations

import numpy as np

#: Memory the bootstrap may use (replicates and the rates derived from them).
MEMORY_LIMIT = 2 << 30


def memory_estimate(n_resamples: int, n_groups: int, n_classes: int) -> int:
    """Bytes the percentile bootstrap of an audit needs, about: replicates and per-replicate rates.

    Each replicate holds a ``(G, K, K)`` int64 table, and the rates, gaps and the
    sort of the percentile step keep a few dozen float64 values per (replicate,
    group, class) alive at once.
    """
    k = max(int(n_classes), 2)
    return int(n_resamples) * int(n_groups) * 8 * (2 * k * k + 24 * k)


def check_memory(n_resamples: int, n_groups: int, n_classes: int, limit: int = MEMORY_LIMIT) -> None:
    """Refuse (one line with the figure) a bootstrap that would not fit in ``limit`` bytes.

    Raises
    ------
    fairfix.errors.UsageError
        ``--bootstrap`` times the number of groups is too large.
    """
    need = memory_estimate(n_resamples, n_groups, n_classes)
    if need <= limit:
        return
    from fairfix import errors

    most = max(limit // max(memory_estimate(1, n_groups, n_classes), 1), 0)
    raise errors.UsageError(
        f"--bootstrap {n_resamples} over {n_groups} group(s) needs about {need / 2**30:.1f} GiB "
        f"(limit {limit / 2**30:.0f} GiB); pass --bootstrap {most} or less, or --bootstrap 0"
    )


def resample_counts(counts: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of ``counts`` (shape ``(G, K, K)``): shape ``(B, G, K, K)``."""
    g, k, _ = counts.shape
    out = np.empty((n_resamples, g, k * k), dtype=np.int64)
    for i in range(g):
        flat = counts[i].reshape(-1)
        n = int(flat.sum())
        out[:, i, :] = rng.multinomial(n, flat / n, size=n_resamples) if n else 0
    return out.reshape(n_resamples, g, k, k)


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper percentile bounds over axis 0, ignoring NaN replicates.

    The numbers of ``np.nanquantile(replicates, q, axis=0)`` (linear interpolation;
    NaN where a column has no finite replicate), computed with one sort for all
    columns instead of one ``nanquantile`` per column (and without the
    ``numpy.ma`` import ``np.quantile`` triggers), which matters when a small
    file is audited.
    """
    alpha = (1.0 - level) / 2.0
    reps = np.asarray(replicates, dtype=np.float64)
    shape = reps.shape[1:]
    if reps.shape[0] == 0:  # no replicates: undefined, as nanquantile has it
        empty = np.full(shape, np.nan)
        return (empty[()], empty[()]) if empty.ndim == 0 else (empty, empty.copy())
    ordered = np.sort(reps.reshape(reps.shape[0], -1), axis=0)  # NaN sorts last
    valid = reps.shape[0] - np.isnan(ordered).sum(axis=0)
    return _quantile_sorted(ordered, valid, alpha, shape), _quantile_sorted(
        ordered, valid, 1.0 - alpha, shape
    )


def _quantile_sorted(
    ordered: np.ndarray, valid: np.ndarray, q: float, shape: tuple[int, ...]
) -> np.ndarray:
    """The linear-method quantile (as numpy's) of each column's first ``valid`` sorted values.

    The same arithmetic as numpy's ``_quantile``: virtual index ``(n - 1) * q``;
    at or past the last value, the last value; else ``_lerp`` between neighbours.
    """
    n = np.maximum(valid, 1)
    virtual = (n - 1) * q
    previous = np.floor(virtual).astype(np.intp)
    nxt = previous + 1
    last = virtual >= n - 1
    previous[last] = -1
    nxt[last] = -1
    gamma = virtual - previous
    cols = np.arange(ordered.shape[1])
    a = ordered[np.where(previous < 0, n - 1, previous), cols]
    b = ordered[np.where(nxt < 0, n - 1, nxt), cols]
    diff = b - a
    with np.errstate(invalid="ignore"):
        out = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    out = np.where(valid > 0, out, np.nan).reshape(shape)
    return out[()] if out.ndim == 0 else out
