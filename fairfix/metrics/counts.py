"""Confusion counts per (group, true label, predicted label): the one table every metric comes from.

Counts add up, so a file read in chunks, a stream, or shards computed on several
machines give exactly the numbers of one pass over all rows
(``ConfusionCounts.__add__``).  Building them is vectorised per batch: each column is
dictionary-encoded, the per-batch dictionaries are mapped onto growing global
vocabularies, and one ``bincount`` over a combined integer key counts the batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairfix import errors

MISSING = "<missing>"


@dataclass(frozen=True)
class ConfusionCounts:
    """Counts of rows per (group, true label, predicted label).

    Attributes
    ----------
    group_columns
        Names of the columns whose intersection defines a group.
    groups
        One tuple of values per group (one value per group column), sorted.
    classes
        Every label value seen as a true or predicted label, sorted.
    label_classes
        The subset of ``classes`` that occur as true labels.
    counts
        int64 array of shape ``(len(groups), len(classes), len(classes))``:
        ``counts[g, i, j]`` rows of group ``g`` with true label ``classes[i]``
        predicted as ``classes[j]``.
    """

    group_columns: tuple[str, ...]
    groups: tuple[tuple[Any, ...], ...]
    classes: tuple[Any, ...]
    label_classes: tuple[Any, ...]
    counts: np.ndarray

    @property
    def n(self) -> int:
        """Total number of rows counted."""
        return int(self.counts.sum())

    def group_dicts(self) -> list[dict[str, Any]]:
        """Each group as ``{column: value}``."""
        return [dict(zip(self.group_columns, g, strict=True)) for g in self.groups]

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:
        """Counts of the union of the rows behind ``self`` and ``other``."""
        if self.group_columns != other.group_columns:
            raise ValueError("cannot add counts over different group columns")
        groups = _sorted_values(set(self.groups) | set(other.groups), tuples=True)
        classes = _sorted_values(set(self.classes) | set(other.classes))
        label_classes = _sorted_values(set(self.label_classes) | set(other.label_classes))
        out = np.zeros((len(groups), len(classes), len(classes)), dtype=np.int64)
        for part in (self, other):
            gi = np.array([groups.index(g) for g in part.groups], dtype=np.intp)
            ci = np.array([classes.index(c) for c in part.classes], dtype=np.intp)
            out[np.ix_(gi, ci, ci)] += part.counts
        return ConfusionCounts(self.group_columns, groups, classes, label_classes, out)


def _sort_key(v: Any) -> tuple[int, Any]:
    if isinstance(v, bool | int | float | np.integer | np.floating):
        return (0, float(v))
    return (1, str(v))


def _sorted_values(values: Iterable[Any], tuples: bool = False) -> tuple[Any, ...]:
    if tuples:
        return tuple(sorted(values, key=lambda t: tuple(_sort_key(v) for v in t)))
    return tuple(sorted(values, key=_sort_key))


def normalize_values(raw: Sequence[Any]) -> list[Any]:
    """Give a small vocabulary of raw values one consistent Python type.

    CSV cells arrive as text; a prediction column may be float where the label is
    int.  The rule is all-or-nothing over the vocabulary: strings become ints when
    every one is a canonical integer, bools when every one is true/false, floats
    when every one parses as a number; integral floats become ints when every
    number is integral.  Otherwise values are left as they are.
    """
    vals = [v.item() if isinstance(v, np.generic) else v for v in raw]
    texts = [v for v in vals if isinstance(v, str)]
    if texts and len(texts) < len(vals):
        # Text next to numbers (a text label column, a float prediction column):
        # the text joins the numbers when every text value reads as one.
        parsed = iter(normalize_values(texts))
        as_numbers = [next(parsed) if isinstance(v, str) else v for v in vals]
        if all(isinstance(v, bool | int | float) for v in as_numbers):
            vals = as_numbers
    if vals and all(isinstance(v, str) for v in vals):
        stripped = [v.strip() for v in vals]
        try:
            ints = [int(v) for v in stripped]
            if all(str(i) == s for i, s in zip(ints, stripped, strict=True)):
                return ints
        except ValueError:
            pass
        lowered = [v.lower() for v in stripped]
        if all(v in ("true", "false") for v in lowered):
            return [v == "true" for v in lowered]
        try:
            vals = [float(v) for v in stripped]
        except ValueError:
            return list(raw)
        if any(math.isnan(v) for v in vals):
            return list(raw)
    if vals and all(isinstance(v, bool | int | float) for v in vals):
        if all(isinstance(v, bool) for v in vals):
            return vals
        if all(float(v).is_integer() for v in vals):
            return [int(v) for v in vals]
        return [float(v) for v in vals]
    return vals


def normalize_group_values(raw: Sequence[Any]) -> list[Any]:
    """Group values as the file wrote them: no two distinct values are ever merged.

    Text stays text -- ZIP or region codes ``"01"`` and ``"1"`` are two groups --
    except that a vocabulary of canonical integers (``"1"``, ``"20"``, ``"-3"``)
    becomes ints and one of ``true``/``false`` (each spelled one way) becomes
    bools, which loses nothing.  Numbers typed by the file itself (Parquet, JSON)
    are normalised as labels are (``1.0`` is ``1``).
    """
    vals = [v.item() if isinstance(v, np.generic) else v for v in raw]
    texts = [v for v in vals if isinstance(v, str)]
    others = [v for v in vals if not isinstance(v, str)]
    text_map: dict[str, Any] = {t: t for t in texts}
    if texts:
        if all(t == str(_int_or_none(t)) for t in texts):
            text_map = {t: int(t) for t in texts}
        else:
            lowered = {t: t.lower() for t in texts}
            if set(lowered.values()) <= {"true", "false"} and len(set(lowered.values())) == len(texts):
                text_map = {t: lowered[t] == "true" for t in texts}
    other_map = dict(zip(range(len(others)), normalize_values(others), strict=True)) if others else {}
    out, j = [], 0
    for v in vals:
        if isinstance(v, str):
            out.append(text_map[v])
        else:
            out.append(other_map[j])
            j += 1
    return out


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _normalize_groups(values: list[Any]) -> list[Any]:
    """Normalise group values, leaving the ``<missing>`` marker out of the type rule."""
    present = [v for v in values if v is not _MISSING_CODE]
    norm = iter(normalize_group_values(present))
    return [MISSING if v is _MISSING_CODE else next(norm) for v in values]


class _MissingMarker:
    """The vocabulary entry of missing group values (never equal to a value in the data)."""

    def __repr__(self) -> str:
        return MISSING


_MISSING_CODE = _MissingMarker()


class _Vocab:
    """A growing mapping from raw values to consecutive codes."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}
        self.values: list[Any] = []

    def codes_for(self, values: list[Any]) -> np.ndarray:
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            code = self.index.get(v)
            if code is None:
                code = self.index[v] = len(self.values)
                self.values.append(v)
            out[i] = code
        return out

    def __len__(self) -> int:
        return len(self.values)


_NUMPY_TYPES = {
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
    "halffloat": np.float16, "float": np.float32, "double": np.float64,
}


def numpy_view(arr: Any, nulls_ok: bool = False) -> np.ndarray:
    """A read-only numpy view of the data of a fixed-width pyarrow array (ints, floats).

    Slots under nulls hold arbitrary values; pass ``nulls_ok=True`` to accept that.

    ``pyarrow.Array.to_numpy`` goes through pyarrow's pandas conversion layer,
    which imports pandas (~0.35 s) even for zero-copy views; viewing the data
    buffer directly keeps the audit path free of pandas.
    """
    dtype = np.dtype(_NUMPY_TYPES[str(arr.type)])
    if arr.null_count and not nulls_ok:
        raise ValueError("numpy_view needs an array without nulls")
    data = arr.buffers()[1]
    if len(arr) == 0 or data is None:
        return np.zeros(len(arr), dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def _valid_mask(arr: Any) -> np.ndarray | None:
    """Boolean mask of the non-null slots of a pyarrow array (None when it has no nulls).

    Unpacks Arrow's validity bitmap with numpy instead of ``pyarrow.compute``, whose
    import alone costs more than auditing a small file.
    """
    if not arr.null_count:
        return None
    bitmap = arr.buffers()[0]
    if bitmap is None:  # e.g. a null-typed array: every slot is null
        return np.zeros(len(arr), dtype=bool)
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little",
                         count=arr.offset + len(arr))
    return bits[arr.offset :].view(bool)


def float_values(arr: Any) -> np.ndarray:
    """float64 numpy values of a numeric pyarrow array (ints, floats, decimals), NaN where null.

    The same numbers as ``np.asarray(arr.to_numpy(zero_copy_only=False), np.float64)``
    without pyarrow's pandas layer.
    """
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_decimal(arr.type):
        decimals = [np.nan if v is None else float(v) for v in arr.to_pylist()]
        return np.array(decimals, dtype=np.float64)
    values = numpy_view(arr, nulls_ok=True)
    if values.dtype != np.float64:
        values = values.astype(np.float64)
    valid = _valid_mask(arr)
    if valid is not None:
        values = np.where(valid, values, np.nan)
    return values


# Integer columns whose values span at most this many consecutive integers are coded
# with numpy (offset, bincount, lookup table) instead of a hash-based dictionary_encode.
_INT_SPAN = 1 << 16


def _encode_small_ints(arr: Any, vocab: _Vocab) -> np.ndarray | None:
    """Codes of a null-free integer array with a small value range; None when the range is wide."""
    values = numpy_view(arr)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(values.min()), int(values.max())
    span = hi - lo + 1
    if span > _INT_SPAN:
        return None
    if lo == 0 and values.dtype == np.int64:
        shifted = values
    else:
        shifted = np.subtract(values, lo, dtype=np.int64)
    if span <= 2:  # min and max are both present: no need to count (binary labels)
        present = np.arange(span)
    else:
        present = np.flatnonzero(np.bincount(shifted, minlength=span))
    codes = vocab.codes_for([lo + int(i) for i in present])
    if lo == 0 and present.size == span and np.array_equal(codes, present):
        return shifted  # the values are their own codes: no lookup needed
    lut = np.zeros(span, dtype=np.int64)
    lut[present] = codes
    return lut[shifted]


def encode(arr: Any, vocab: _Vocab) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes of a pyarrow array in ``vocab``, and a boolean mask of missing rows.

    The codes are an integer array: int64, or the dictionary's own indices (int32,
    usually) when they already are the codes.  When no row is missing it may be a
    read-only view of the Arrow data (copy it before writing to it); when rows are
    missing it is a fresh int64 array.  NaN counts as missing for float columns.

    Dictionary-encoded columns (how tables.py reads group and label columns) and
    null-free integer columns are coded with numpy alone, in a few vectorised
    passes; other columns are dictionary-encoded by pyarrow first.
    """
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    typ = arr.type
    if (
        pa.types.is_integer(typ)
        and not pa.types.is_uint64(typ)
        and not arr.null_count
    ):
        codes = _encode_small_ints(arr, vocab)
        if codes is not None:
            return codes, None
    if not pa.types.is_dictionary(typ):
        import pyarrow.compute as pc

        if pa.types.is_floating(typ):
            arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, typ), arr)
        arr = pc.dictionary_encode(arr)
    mapping = vocab.codes_for(arr.dictionary.to_pylist())
    idx = arr.indices
    local = numpy_view(idx, nulls_ok=True)
    valid = _valid_mask(idx)
    missing = None if valid is None else ~valid
    if len(mapping) == 0:
        return np.zeros(len(local), dtype=np.int64), missing
    if valid is not None:
        local = np.where(valid, local, 0)  # slots under nulls hold arbitrary values
    elif np.array_equal(mapping, np.arange(len(mapping))):
        return local, None  # the dictionary indices are the codes already
    return mapping[local], missing


class CountAccumulator:
    """Accumulate confusion counts batch by batch.

    Parameters
    ----------
    group_columns
        Names of the group columns, in the order their arrays are passed to :meth:`add`.
    """

    def __init__(self, group_columns: Sequence[str]):
        self.group_columns = tuple(group_columns)
        self.group_vocabs = [_Vocab() for _ in self.group_columns]
        self.label_vocab = _Vocab()
        self.pred_vocab = _Vocab()
        self._acc: dict[tuple[int, ...], int] = {}

    def add_codes(
        self, group_codes: Sequence[np.ndarray], y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None
    ) -> None:
        """Count rows given their codes in the accumulator's vocabularies.

        ``weights`` (int64, >= 0): each row stands for that many rows (a counts table's
        count column); the counts are exact integer sums.
        """
        if len(y) == 0:
            return
        shape = [len(v) for v in self.group_vocabs] + [len(self.label_vocab), len(self.pred_vocab)]
        shape = [max(s, 1) for s in shape]
        # One combined int64 key per row (row-major over ``shape``), built in place.
        columns = [*group_codes, y, p]
        key = np.array(columns[0], dtype=np.int64)  # a fresh, writable copy
        for codes, size in zip(columns[1:], shape[1:], strict=True):
            key *= size
            key += codes
        total = int(np.prod(shape, dtype=np.int64))
        if weights is not None:  # integer sums (bincount's weights would go through float64)
            keys, inverse = np.unique(key, return_inverse=True)
            cnts = np.zeros(len(keys), dtype=np.int64)
            np.add.at(cnts, inverse, np.asarray(weights, dtype=np.int64))
            nonzero = cnts > 0
            keys, cnts = keys[nonzero], cnts[nonzero]
        elif total <= 1 << 22:
            binc = np.bincount(key, minlength=total)
            keys = np.flatnonzero(binc)
            cnts = binc[keys]
        else:  # high-cardinality groups: sort instead of a dense table
            keys, cnts = np.unique(key, return_counts=True)
        for k, c in zip(
            zip(*np.unravel_index(keys, shape), strict=True), cnts.tolist(), strict=True
        ):
            k = tuple(int(i) for i in k)
            self._acc[k] = self._acc.get(k, 0) + c

    def label_values(self) -> list[Any]:
        """The normalised values seen in the label column so far (unsorted)."""
        return normalize_values(self.label_vocab.values)

    def result(self, pred_override: dict[Any, Any] | None = None) -> ConfusionCounts:
        """Freeze the counts, normalising label/prediction and group vocabularies.

        Raw label and prediction values are normalised together (so ``"1"`` in a
        label column and ``1.0`` in a prediction column are one class).
        ``pred_override`` maps raw prediction values to classes instead (used for
        thresholded scores, whose raw values are True/False).
        """
        if pred_override is None:
            norm = normalize_values(self.label_vocab.values + self.pred_vocab.values)
            label_norm = norm[: len(self.label_vocab)]
            pred_norm = norm[len(self.label_vocab) :]
        else:
            label_norm = self.label_values()
            pred_norm = [pred_override[v] for v in self.pred_vocab.values]
        classes = _sorted_values(set(label_norm) | set(pred_norm))
        cls_index = {c: i for i, c in enumerate(classes)}
        group_norms = [_normalize_groups(v.values) for v in self.group_vocabs]
        observed = sorted(self._acc)
        gtuples = [
            tuple(gn[k[i]] for i, gn in enumerate(group_norms)) for k in observed
        ]
        groups = _sorted_values(set(gtuples), tuples=True)
        g_index = {g: i for i, g in enumerate(groups)}
        counts = np.zeros((len(groups), len(classes), len(classes)), dtype=np.int64)
        ng = len(self.group_columns)
        for k, gt in zip(observed, gtuples, strict=True):
            y, p = k[ng], k[ng + 1]
            counts[g_index[gt], cls_index[label_norm[y]], cls_index[pred_norm[p]]] += self._acc[k]
        label_classes = _sorted_values(
            {label_norm[k[ng]] for k in observed}
        )
        return ConfusionCounts(self.group_columns, groups, classes, label_classes, counts)


def counts_from_arrays(
    y_true: Any, y_pred: Any, groups: dict[str, Any] | Sequence[Any]
) -> ConfusionCounts:
    """Confusion counts from in-memory arrays (numpy, lists or pandas objects).

    ``groups`` is a mapping ``{column name: values}`` or a single sequence of values.

    Raises
    ------
    ValueError
        The arrays differ in length, or one holds a missing value (None/NaN).
    """
    import pyarrow as pa

    if not isinstance(groups, dict):
        groups = {"group": groups}
    acc = CountAccumulator(list(groups))
    named = [
        (f"group {k!r}", v, voc)
        for (k, v), voc in zip(groups.items(), acc.group_vocabs, strict=True)
    ]
    named += [("y_true", y_true, acc.label_vocab), ("y_pred", y_pred, acc.pred_vocab)]
    codes: list[np.ndarray] = []
    for name, values, vocab in named:
        c, missing = encode(pa.array(np.asarray(values).tolist()), vocab)
        # Without this check a missing value would be counted as the first value seen.
        if missing is not None and missing.any():
            first = int(np.argmax(missing))
            raise ValueError(f"{name} has a missing value (None/NaN) at index {first}")
        if len(c) != len(codes[0] if codes else c):
            raise ValueError(f"{name} has {len(c)} values; {named[0][0]} has {len(codes[0])}")
        codes.append(c)
    acc.add_codes(codes[:-2], codes[-2], codes[-1])
    return acc.result()


def choose_positive(classes: Sequence[Any], given: Any = None) -> tuple[Any, str]:
    """The positive label of a binary task and where the choice came from.

    Default: ``1`` (or ``True``) when present, else the larger of the two labels
    (lexically for strings).
    """
    if given is not None:
        for c in classes:
            if c == given and type(c) is type(given):
                return c, "--positive"
        norm = normalize_values([str(given)])[0] if not isinstance(given, bool) else given
        for c in classes:
            if c == norm or str(c) == str(given):
                return c, "--positive"
        raise errors.DataError(
            f"--positive {given!r} is not a label value; labels are: {', '.join(map(repr, classes))}"
        )
    for c in classes:
        if c is True or (isinstance(c, int | float) and not isinstance(c, bool) and c == 1):
            return c, f"default: {c!r} is the positive label"
    if all(isinstance(c, str) for c in classes):
        return max(classes), f"default: {max(classes)!r} is the lexically larger label"
    top = _sorted_values(classes)[-1]
    return top, f"default: {top!r} is the larger label"
