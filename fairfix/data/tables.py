"""Read tables (CSV, Parquet, JSON Lines, stdin, in-memory frames) as a stream of batches.

Everything goes through :func:`open_table`, which checks that the requested
columns exist before any row is read, and yields ``pyarrow.RecordBatch`` objects
of at most ``batch_rows`` rows, so peak memory depends on the batch size, not on
the file size.  Only pyarrow and numpy are imported here: the audit path must
stay fast to start (no pandas, no torch).

One module (~610 lines) on purpose: every reader (CSV, Parquet, JSON Lines, stdin, frames, many
files) shares the ``Table`` type, the column checks and the read-ahead.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import pyarrow as pa

from fairfix import errors

FORMATS = ("csv", "parquet", "jsonl")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".data": "csv",
    ".test": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")
# Cells read as missing in CSV files. Deliberately shorter than pyarrow's default
# list: "NA" can be a real group value (North America) but is too common as a
# missing marker to leave out.
NULL_VALUES = ["", "NA", "NaN", "nan", "N/A", "n/a", "null", "NULL", "None", "?"]
DEFAULT_BATCH_ROWS = 1 << 20
# Bytes of CSV text parsed at a time.  pyarrow's streaming CSV reader holds a few
# dozen blocks' worth of buffers in flight, so this bounds peak memory (~250 MB
# at 4 MiB, ~600 MB at 64 MiB) far more than the batch size does; larger blocks
# are not faster.
_CSV_BLOCK = 1 << 22


def infer_format(path: str, input_format: str | None = None) -> str:
    """Return ``csv``, ``parquet`` or ``jsonl`` for a path (``-`` means stdin, CSV by default)."""
    if input_format is not None:
        if input_format not in FORMATS:
            raise errors.UsageError(
                f"--input-format {input_format!r}: choose one of {', '.join(FORMATS)}"
            )
        return input_format
    if path == "-":
        return "csv"
    name = os.path.basename(path).lower()
    for comp in _COMPRESSIONS:
        if name.endswith(comp):
            name = name[: -len(comp)]
            break
    ext = os.path.splitext(name)[1]
    if ext not in _EXTENSIONS:
        raise errors.UsageError(errors.UNKNOWN_FORMAT.format(path=path))
    return _EXTENSIONS[ext]


class _PrefixedStream(io.RawIOBase):
    """A readable stream that first returns ``prefix``, then the rest of ``raw``.

    Used to look at a CSV header on a non-seekable stream (stdin, a gzip pipe)
    and still hand the whole stream to pyarrow.
    """

    def __init__(self, prefix: bytes, raw: IO[bytes]):
        self._prefix = prefix
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        return n


@dataclass
class Table:
    """An opened table: its column names and a way to stream the columns you need.

    Attributes
    ----------
    name
        What error messages call the table: the path, ``<stdin>`` or ``<DataFrame>``.
    columns
        Column names, in file order.
    num_rows
        Row count when known without reading the data (Parquet, in-memory), else None.
    """

    name: str
    fmt: str
    columns: list[str]
    num_rows: int | None = None
    _source: Any = field(default=None, repr=False)
    delimiter: str = ","
    _schema: Any = field(default=None, repr=False)
    _close: Any = field(default=None, repr=False)
    row_numbers: bool = True  # False for tables an engine computed: their rows are not the file's

    def close(self) -> None:
        """Release the file handle held since the header was read (if any)."""
        if self._close is not None:
            self._close()
            self._close = None

    def csv_read_options(self, block_size: int | None = None) -> Any:
        """Pyarrow CSV read options for this table's stream: the names parsed from its header."""
        import pyarrow.csv as pcsv

        kw = {} if block_size is None else {"block_size": block_size}
        return pcsv.ReadOptions(column_names=list(self.columns), use_threads=True, **kw)

    def require(self, columns: Sequence[str]) -> None:
        """Raise :class:`~fairfix.errors.DataError` naming the first absent column."""
        for col in columns:
            if col not in self.columns:
                shown = ", ".join(repr(c) for c in self.columns[:40])
                if len(self.columns) > 40:
                    shown += f", ... ({len(self.columns)} in all)"
                raise errors.DataError(
                    errors.MISSING_COLUMN.format(path=self.name, column=col, columns=shown)
                )

    def iter_batches(
        self,
        columns: Sequence[str],
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
    ) -> Iterator[pa.RecordBatch]:
        """Yield record batches holding ``columns`` (deduplicated, in that order).

        ``categorical`` columns come back dictionary-encoded where the format allows it
        (CSV: read as strings and encoded while parsing, so every value keeps its text);
        ``numeric`` columns are parsed as float64 in CSV files.
        """
        cols = list(dict.fromkeys(columns))
        self.require(cols)
        if self.fmt == "csv":
            yield from self._csv_batches(cols, batch_rows, categorical, numeric)
        elif self.fmt == "parquet":
            yield from self._parquet_batches(cols, batch_rows, categorical)
        elif self.fmt == "jsonl":
            yield from self._jsonl_batches(cols, batch_rows)
        else:  # in-memory pyarrow table
            yield from self._source.select(cols).to_batches(max_chunksize=batch_rows)

    # -- CSV ------------------------------------------------------------------
    def _csv_batches(self, cols, batch_rows, categorical, numeric):
        import pyarrow.csv as pcsv

        types: dict[str, pa.DataType] = {}
        for c in cols:
            if c in categorical:
                types[c] = pa.dictionary(pa.int32(), pa.string())
            elif c in numeric:
                types[c] = pa.float64()
        # ~64 bytes a row is a fair guess for narrow prediction files; pyarrow
        # splits blocks at row boundaries, so this only sets the batch size (and
        # memory: see _CSV_BLOCK).
        block = max(1 << 16, min(batch_rows * 64, _CSV_BLOCK))
        stream = self._source()
        try:
            reader = _wrap_arrow(
                self,
                lambda: pcsv.open_csv(
                    stream,
                    read_options=self.csv_read_options(block),
                    parse_options=pcsv.ParseOptions(delimiter=self.delimiter),
                    convert_options=pcsv.ConvertOptions(
                        include_columns=cols,
                        column_types=types,
                        null_values=NULL_VALUES,
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=False,
                    ),
                ),
            )
        except errors.DataError as exc:
            stream.close()
            if _no_rows(exc):  # a header and nothing else: no batches
                return
            raise
        except BaseException:
            stream.close()
            raise
        try:
            while True:
                batch = _wrap_arrow(self, lambda: reader.read_next_batch(), stop=True)
                if batch is None:
                    break
                yield batch
        finally:
            reader.close()
            stream.close()

    # -- Parquet --------------------------------------------------------------
    def _parquet_batches(self, cols, batch_rows, categorical):
        import pyarrow.parquet as pq

        schema = self._schema
        as_dict = [
            c
            for c in cols
            if c in categorical
            and (pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(schema.field(c).type))
        ]
        pf = _wrap_arrow(self, lambda: pq.ParquetFile(self._source, read_dictionary=as_dict))
        it = pf.iter_batches(batch_size=batch_rows, columns=cols, use_threads=True)

        def batches() -> Iterator[pa.RecordBatch]:
            while True:
                batch = _wrap_arrow(self, lambda: next(it, None))
                if batch is None:
                    break
                yield batch

        if pf.metadata.num_rows <= batch_rows:
            yield from batches()
        else:  # decode the next batch while the caller works on this one
            yield from _read_ahead(batches())

    # -- JSON Lines -----------------------------------------------------------
    def _jsonl_batches(self, cols, batch_rows):
        import pyarrow.json as pjson

        stream = self._source()
        reader = _wrap_arrow(
            self,
            lambda: pjson.open_json(
                stream, read_options=pjson.ReadOptions(block_size=max(1 << 16, min(batch_rows * 64, 1 << 26)))
            ),
        )
        try:
            while True:
                batch = _wrap_arrow(self, lambda: reader.read_next_batch(), stop=True)
                if batch is None:
                    break
                missing = [c for c in cols if c not in batch.schema.names]
                if missing:
                    raise errors.DataError(
                        f"{self.name}: column {missing[0]!r} is absent from some rows' records"
                    )
                yield batch.select(cols)
        finally:
            reader.close()
            stream.close()


def _no_rows(exc: BaseException) -> bool:
    """True for pyarrow's error on a CSV stream that holds no row at all (after the header)."""
    return isinstance(exc.__cause__, pa.ArrowInvalid) and "Empty CSV file" in str(exc.__cause__)


def _read_ahead(batches: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """Yield the items of ``batches``, producing up to ``depth`` more in a background thread.

    pyarrow releases the GIL while it decodes, and so does numpy for the work
    the caller does on each batch, so on two cores the two overlap.  Errors
    raised while producing are re-raised here, in the caller's thread.
    """
    import queue
    import threading

    q: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put((False, batch)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((True, exc))
            return
        put((True, None))

    worker = threading.Thread(target=produce, name="fairfix-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            done, item = q.get()
            if done:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


#: pyarrow's message for a CSV cell that does not parse as the column's type, e.g.
#: ``In CSV column #3: Row #2: CSV conversion error to double: invalid value 'abc'``.
_CSV_CONVERSION = re.compile(
    r"In CSV column #(?P<index>\d+): (?:Row #\d+: )?CSV conversion error to \w+: invalid value '(?P<value>.*)'"
)


def _wrap_arrow(table: Table, fn, stop: bool = False):
    """Run a pyarrow call, turning its parse errors into one-line DataErrors."""
    try:
        return fn()
    except StopIteration:
        if stop:
            return None
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        bad = _CSV_CONVERSION.search(reason)
        if bad is not None and int(bad["index"]) < len(table.columns):  # name the column, not its position
            column = table.columns[int(bad["index"])]
            raise errors.DataError(
                errors.NOT_NUMERIC.format(path=table.name, column=column, value=bad["value"][:80])
            ) from exc
        if len(reason) > 300:
            reason = reason[:300] + "..."
        raise errors.DataError(
            errors.UNREADABLE_FILE.format(path=table.name, fmt=table.fmt, reason=reason)
        ) from exc


def _open_bytes(path: str) -> IO[bytes]:
    """A binary stream over a file or stdin, decompressed according to the extension."""
    if path == "-":
        return sys.stdin.buffer
    stream = pa.input_stream(path, compression="detect")
    return stream  # type: ignore[return-value]


#: The most header bytes read to find the end of a CSV header (quoted newlines included).
_MAX_HEADER = 1 << 24


def _header_end(buf: bytes) -> int:
    """Index of the newline that ends the first CSV record (outside quotes), or -1."""
    quoted = False
    i = 0
    while True:
        nl = buf.find(b"\n", i)
        if nl < 0:
            return -1
        quoted ^= buf.count(b'"', i, nl) % 2 == 1
        if not quoted:
            return nl
        i = nl + 1


def _peek_csv_header(name: str, stream: IO[bytes]) -> tuple[list[str], bytes, str, int]:
    """Read the header record; return (names, bytes read after it, delimiter, header length in bytes).

    The header is parsed here (quotes, doubled quotes and quoted newlines as the csv
    module reads them; names stripped of surrounding blanks) and pyarrow is given the
    names, so ``y, p, g`` names the columns ``y``, ``p`` and ``g``.
    """
    buf = b""
    end = -1
    try:
        while (end := _header_end(buf)) < 0:
            chunk = stream.read(1 << 16)
            if not chunk:
                break
            buf += chunk
            if len(buf) > _MAX_HEADER:
                raise errors.DataError(
                    errors.UNREADABLE_FILE.format(path=name, fmt="csv",
                                                  reason=f"no end of the header line in the first {_MAX_HEADER} bytes")
                )
    except OSError as exc:  # a corrupt or truncated compressed file, a read error
        raise errors.DataError(
            errors.UNREADABLE_FILE.format(path=name, fmt="csv", reason=" ".join(str(exc).split())[:300])
        ) from exc
    if not buf.strip():
        raise errors.DataError(errors.EMPTY_FILE.format(path=name))
    header, rest = (buf[:end], buf[end + 1 :]) if end >= 0 else (buf, b"")
    try:
        text = header.decode("utf-8-sig").rstrip("\r")
    except UnicodeDecodeError as exc:
        raise errors.DataError(
            errors.UNREADABLE_FILE.format(path=name, fmt="csv", reason="header is not UTF-8 text")
        ) from exc
    delimiter = "\t" if text.count("\t") > text.count(",") else ","
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(max(limit, len(text) + 1))
        names = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except (csv.Error, StopIteration) as exc:
        raise errors.DataError(
            errors.UNREADABLE_FILE.format(path=name, fmt="csv", reason=f"bad header ({exc})")
        ) from exc
    finally:
        csv.field_size_limit(limit)
    names = [n.strip() for n in names]
    if any(not n for n in names):
        raise errors.DataError(f"{name}: header field {names.index('') + 1} is empty; every column needs a name")
    return names, rest, delimiter, (end + 1 if end >= 0 else len(buf))


def _skip(stream: IO[bytes], n: int) -> IO[bytes]:
    """``stream`` after reading and dropping its first ``n`` bytes (the header, on a second pass)."""
    while n > 0:
        chunk = stream.read(min(n, 1 << 20))
        if not chunk:
            break
        n -= len(chunk)
    return stream


def _refuse_duplicates(name: str, columns: list[str], where: str) -> None:
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise errors.DataError(f"{name}: column {dup!r} appears twice in the {where}")


def open_table(data: Any, input_format: str | None = None) -> Table:
    """Open a path, ``-`` (stdin), a pandas DataFrame or a pyarrow Table for batched reading.

    Raises
    ------
    fairfix.errors.DataError
        The file is missing, empty or cannot be parsed in its format.
    """
    if isinstance(data, pa.Table):
        return Table("<Table>", "table", data.column_names, data.num_rows, data)
    if type(data).__name__ == "DataFrame" and hasattr(data, "columns"):
        tbl = pa.Table.from_pandas(data, preserve_index=False)
        # a frame fairfix read keeps its file's name (data.frames.SOURCE); its rows are not the file's
        name = str(getattr(data, "attrs", {}).get("fairfix_source") or "<DataFrame>")
        return Table(name, "table", tbl.column_names, tbl.num_rows, tbl, row_numbers=name == "<DataFrame>")
    path = os.fspath(data)
    fmt = infer_format(path, input_format)
    name = "<stdin>" if path == "-" else path
    if path != "-":
        if not os.path.exists(path):
            raise errors.DataError(errors.MISSING_FILE.format(path=path))
        if os.path.isdir(path):
            raise errors.DataError(f"{path}: is a directory, not a data file")
        if os.path.getsize(path) == 0:
            raise errors.DataError(errors.EMPTY_FILE.format(path=path))
    if fmt == "parquet":
        import pyarrow.parquet as pq

        source: Any = path
        if path == "-":
            source = pa.BufferReader(sys.stdin.buffer.read())
        table = Table(name, fmt, [], None, source)
        pf = _wrap_arrow(table, lambda: pq.ParquetFile(source))
        table.columns = list(pf.schema_arrow.names)
        _refuse_duplicates(name, table.columns, "schema")
        table.num_rows = pf.metadata.num_rows
        table._schema = pf.schema_arrow
        return table
    if fmt == "csv":
        raw = _wrap_arrow(Table(name, fmt, []), lambda: _open_bytes(path))
        try:
            names, prefix, delimiter, header_bytes = _peek_csv_header(name, raw)
        except BaseException:
            if path != "-":
                raw.close()
            raise
        _refuse_duplicates(name, names, "header")
        consumed = [False]

        if path != "-":
            raw.close()

        def reopen() -> IO[bytes]:
            # A file is re-opened as a native pyarrow stream: pyarrow's read-ahead threads then
            # never call back into Python (a Python stream left them running at exit after a
            # read error: "terminate called without an active exception", exit 134).  Stdin
            # can be read once: the bytes we peeked at come first.  Either way the stream
            # starts after the header: pyarrow is given the names.
            if path != "-":
                return _wrap_arrow(Table(name, fmt, []), lambda: _skip(_open_bytes(path), header_bytes))
            if consumed[0]:
                raise errors.UsageError("stdin can be read only once")
            consumed[0] = True
            return io.BufferedReader(_PrefixedStream(prefix, raw), buffer_size=1 << 20)

        def close() -> None:
            if not consumed[0] and path != "-":
                consumed[0] = True
                raw.close()

        return Table(name, fmt, names, None, reopen, delimiter=delimiter, _close=close)
    # jsonl
    table = Table(name, fmt, [])
    first = _wrap_arrow(table, lambda: _open_bytes(path))
    head = _wrap_arrow(table, lambda: first.read(1 << 20))
    if not head.strip():
        raise errors.DataError(errors.EMPTY_FILE.format(path=name))
    import pyarrow.json as pjson

    sample = head.rsplit(b"\n", 1)[0] if b"\n" in head.strip() else head
    schema = _wrap_arrow(table, lambda: pjson.read_json(pa.BufferReader(sample)).schema)
    consumed = [False]

    if path != "-":
        first.close()

    def reopen_json() -> IO[bytes]:
        if path != "-":  # a native pyarrow stream (see open_table's CSV branch)
            return _wrap_arrow(table, lambda: _open_bytes(path))
        if consumed[0]:
            raise errors.UsageError("stdin can be read only once")
        consumed[0] = True
        return io.BufferedReader(_PrefixedStream(head, first), buffer_size=1 << 20)

    def close_json() -> None:
        if not consumed[0] and path != "-":
            consumed[0] = True
            first.close()

    table.columns = list(schema.names)
    _refuse_duplicates(name, table.columns, "records")
    table._source = reopen_json
    table._close = close_json
    return table


_GLOB_CHARS = frozenset("*?[")


def is_many(path: str) -> bool:
    """True when ``path`` names many files: a directory, or a glob that is not itself a file."""
    if path == "-":
        return False
    if os.path.isdir(path):
        return True
    return not os.path.exists(path) and any(ch in path for ch in _GLOB_CHARS)


def _hidden(name: str) -> bool:
    # Spark, Hive and Hadoop mark what is not data with a leading dot or underscore
    # (_SUCCESS, _temporary/, .part-0000.crc).
    return name.startswith((".", "_"))


def expand_files(path: str, input_format: str | None = None) -> list[tuple[str, str]]:
    """``(file, format)`` for every data file of a directory (recursively) or a glob, sorted.

    Names that start with ``.`` or ``_`` (``_SUCCESS``, ``.crc`` files, ``_temporary/``)
    are skipped in directories; any other file must have a known extension (or
    ``input_format`` must be given).

    Raises
    ------
    fairfix.errors.DataError
        Nothing matches, or a file has an extension fairfix cannot read.
    """
    import glob

    if os.path.isdir(path):
        found = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not _hidden(d))
            found += [os.path.join(root, f) for f in files if not _hidden(f)]
        if not found:
            raise errors.DataError(f"{path}: the directory holds no data files")
    else:
        found = [f for f in glob.glob(path, recursive=True) if os.path.isfile(f)]
        if not found:
            raise errors.DataError(f"{path}: no file matches this pattern")
    return [(f, infer_format(f, input_format)) for f in sorted(found)]


def open_sources(data: Any, input_format: str | None = None) -> list[Table]:
    """Open one or several sources: each a path, a directory, a glob, ``-``, a DataFrame or a Table.

    A list or tuple is several sources; a directory or a glob stands for the files it holds.
    CSV and JSON Lines tables hold their file open until :meth:`Table.close` (or until read).
    """
    items = list(data) if isinstance(data, list | tuple) else [data]
    if not items:
        raise errors.UsageError("give at least one data source")
    tables: list[Table] = []
    try:
        for item in items:
            if isinstance(item, str | os.PathLike) and is_many(os.fspath(item)):
                for f, fmt in expand_files(os.fspath(item), input_format):
                    tables.append(open_table(f, fmt))
                    tables[-1].close()  # read its header only: thousands of files, few handles
            else:
                tables.append(open_table(item, input_format))
    except BaseException:
        for t in tables:
            t.close()
        raise
    return tables
