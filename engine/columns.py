"""Typed numpy columns of every stream, built from LMDB and kept current: what queries and analytics
scan instead of JSON.

`ColumnCache(store).get(stream)` returns a `StreamColumns` snapshot (engine.streamcolumns says what
it holds: one read-only array per field of the stream's schema, zone maps, narrow companions; its
names are re-exported here).

Why this shape: the columns are built from LMDB on first use (a page of
rows at a time, decoded by engine._rowdecode straight into typed arrays:
it reads the schema's fields out of each row's JSON itself and hands
orjson only the rows outside its strict subset; ENGINE_PURE=1 decodes every
row with orjson in Python; appended into arrays whose capacity doubles) and
then kept current incrementally: every `get()`
compares the stream's length in LMDB with the rows already loaded and decodes
only the new rows, which also picks up rows that another process appended.
Only committed rows are loaded (not those of a write batch still open), so
the cache never holds a row that could be rolled back. A snapshot never
changes after it is handed out (appends write past its end or into a new
buffer), so readers need no lock; loading is serialised per stream. Big loads
pause the cyclic garbage collector, which otherwise costs more than decoding.
A coded column keeps its int8 companion while its dictionary has at most
NARROW_CODES strings; after that its filters read the int32 codes.
"""

from __future__ import annotations

import gc
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson

from . import _native, keys
from .streamcolumns import BOOL as BOOL
from .streamcolumns import CODE as CODE
from .streamcolumns import FLOAT as FLOAT
from .streamcolumns import INT as INT
from .streamcolumns import MISSING_BOOL as MISSING_BOOL
from .streamcolumns import MISSING_CODE as MISSING_CODE
from .streamcolumns import MISSING_INT as MISSING_INT
from .streamcolumns import SCHEMAS as SCHEMAS
from .streamcolumns import ZONE_ROWS as ZONE_ROWS
from .streamcolumns import CodeDictionary as CodeDictionary
from .streamcolumns import StreamColumns as StreamColumns
from .streamcolumns import StreamSchema as StreamSchema
from .streamcolumns import in_range as in_range
from .streamcolumns import is_missing as is_missing
from .streamcolumns import is_number as is_number
from .streamcolumns import schema_for as schema_for

_rowdecode = _native.load("_rowdecode")  # None when ENGINE_PURE=1: the reference path below
_MAX_INT = int(np.iinfo(np.int64).max)
NARROW_CODES = 128  # a coded column keeps its int8 copy while its dictionary has at most this many strings
PAGE_ROWS = 1024  # rows decoded per LMDB read transaction while loading
GC_PAUSE_ROWS = 10_000  # loads bigger than this run with the cyclic garbage collector paused
_SMETA = struct.Struct(">IQ")  # engine.local's smeta value: stream id, next offset
_FETCH_GAP = 8  # `rows()`: the cursor steps to offsets this close and seeks to farther ones

_DTYPES = {FLOAT: np.float64, INT: np.int64, CODE: np.int32, BOOL: np.uint8}
_MISSING = {FLOAT: np.nan, INT: MISSING_INT, CODE: MISSING_CODE, BOOL: MISSING_BOOL}
_NARROW = {FLOAT: np.float32, CODE: np.int8}  # the dtype of each kind's narrow companion


# ---------------------------------------------------------------------------- value conversion
_NUMBER_TYPES = {float, int, bool, type(None)}


def _as_float(v: Any) -> float:
    if type(v) in (float, int, bool):
        try:
            return float(v)
        except OverflowError:
            return float("nan")
    return float("nan")


def _floats(vals: Sequence[Any]) -> np.ndarray:
    if set(map(type, vals)) <= _NUMBER_TYPES:
        try:
            return np.array(vals, dtype=np.float64)  # None -> NaN
        except OverflowError:
            pass
    return np.array([_as_float(v) for v in vals], dtype=np.float64)


def _as_int(v: Any) -> int:
    if type(v) is float and v.is_integer():
        v = int(v)
    if type(v) in (int, bool) and MISSING_INT < v <= _MAX_INT:
        return int(v)
    return MISSING_INT


def _ints(vals: Sequence[Any]) -> np.ndarray:
    if set(map(type, vals)) <= {int, bool}:
        try:
            return np.array(vals, dtype=np.int64)
        except OverflowError:
            pass
    return np.array([_as_int(v) for v in vals], dtype=np.int64)


def _narrow(values: np.ndarray, dtype: Any) -> np.ndarray:
    """`values` as the narrow companion dtype: floats rounded to nearest (beyond float32: +-inf)."""
    with np.errstate(over="ignore"):
        return values.astype(dtype)


def _bools(vals: Sequence[Any]) -> np.ndarray:
    return np.array([1 if v is True else 0 if v is False else MISSING_BOOL for v in vals], dtype=np.uint8)


class _Growable:
    """A 1-D array with amortised O(1) append (capacity doubling)."""

    __slots__ = ("data", "n")

    def __init__(self, dtype: Any, capacity: int = 1024) -> None:
        self.data = np.empty(capacity, dtype=dtype)
        self.n = 0

    def reserve(self, extra: int) -> None:
        need = self.n + extra
        if need > self.data.shape[0]:
            cap = max(need, 2 * self.data.shape[0])
            grown = np.empty(cap, dtype=self.data.dtype)
            grown[: self.n] = self.data[: self.n]
            self.data = grown  # snapshots keep the old buffer alive, unchanged

    def append(self, values: np.ndarray) -> None:
        self.reserve(values.shape[0])
        self.data[self.n : self.n + values.shape[0]] = values
        self.n += values.shape[0]

    def view(self, n: int) -> np.ndarray:
        v = self.data[:n]
        v.flags.writeable = False
        return v


def _zone_update(col: _Growable, zmin: _Growable, zmax: _Growable, start: int) -> None:
    """Recompute the zone-map blocks that rows [start, col.n) touched."""
    first = start // ZONE_ROWS
    last = (col.n + ZONE_ROWS - 1) // ZONE_ROWS
    block = np.full((last - first) * ZONE_ROWS, np.nan)
    block[: col.n - first * ZONE_ROWS] = col.data[first * ZONE_ROWS : col.n]
    block2 = block.reshape(last - first, ZONE_ROWS)
    lo = np.fmin.reduce(block2, axis=1, initial=np.inf)  # fmin/fmax skip NaN; all-NaN -> +inf/-inf
    hi = np.fmax.reduce(block2, axis=1, initial=-np.inf)
    for z, vals in ((zmin, lo), (zmax, hi)):
        z.n = first
        z.append(vals)


class _StreamState:
    """The growing columns of one stream (guarded by `lock`)."""

    def __init__(self, schema: StreamSchema) -> None:
        self.schema = schema
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.fields = tuple(f for f in self.schema.columns if f != "offset")
        self.missing_row = (None,) * len(self.fields)
        self.n = 0
        self.cols = {f: _Growable(_DTYPES[k]) for f, k in self.schema.columns.items()}
        self.dicts = {f: CodeDictionary() for f, k in self.schema.columns.items() if k == CODE}
        self.zones = {
            f: (_Growable(np.float64, 16), _Growable(np.float64, 16))
            for f, k in self.schema.columns.items()
            if k == FLOAT
        }
        self.narrow: dict[str, _Growable | None] = {
            f: _Growable(_NARROW[k]) for f, k in self.schema.columns.items() if k in _NARROW
        }
        self.snapshot: StreamColumns | None = None

    def append(self, rows: list[tuple[Any, ...]]) -> None:
        """Append rows given as tuples of `self.fields` values (the reference path)."""
        arrays: dict[str, np.ndarray] = {}
        for field, vals in zip(self.fields, zip(*rows, strict=True), strict=True):
            kind = self.schema.columns[field]
            if kind == FLOAT:
                arrays[field] = _floats(vals)
            elif kind == CODE:
                arrays[field] = self.dicts[field].encode(vals)
            elif kind == INT:
                arrays[field] = _ints(vals)
            else:
                arrays[field] = _bools(vals)
        self.append_arrays(len(rows), arrays)

    def decode_page(self, store: Any, stream: str, start: int, count: int) -> None:
        """Decode rows [start, start + count) straight from LMDB into typed arrays and append them
        (engine._rowdecode: same values as `append`; rows the stream lacks are missing)."""
        assert _rowdecode is not None
        kinds = [self.schema.columns[f] for f in self.fields]
        arrays = [np.empty(count, dtype=_DTYPES[k]) for k in kinds]
        codes = [_rowdecode.KIND_CODES[k] for k in kinds]
        dicts = [self.dicts.get(f) for f in self.fields]

        def consume(cursor: Any, n: int) -> int:
            return int(
                _rowdecode.decode_rows(
                    cursor,
                    n,
                    orjson.loads,
                    orjson.JSONDecodeError,
                    self.fields,
                    bytes(codes),
                    arrays,
                    [None if d is None else d.index for d in dicts],
                    [None if d is None else d.values for d in dicts],
                )
            )

        got = store.scan_rows(stream, start, count, consume) or 0
        if got < count:  # a hole in the offsets (should not happen): keep row i = offset i
            for arr, kind in zip(arrays, kinds, strict=True):
                arr[got:] = _MISSING[kind]
        self.append_arrays(count, dict(zip(self.fields, arrays, strict=True)))

    def append_arrays(self, count: int, arrays: dict[str, np.ndarray]) -> None:
        """Append `count` rows given as one converted array per field."""
        start = self.n
        self.cols["offset"].append(np.arange(start, start + count, dtype=np.int64))
        for field in self.fields:
            kind = self.schema.columns[field]
            col = self.cols[field]
            col.append(arrays[field])
            if kind == FLOAT:
                zmin, zmax = self.zones[field]
                _zone_update(col, zmin, zmax, start)
            elif kind == CODE and len(self.dicts[field].values) > NARROW_CODES:
                self.narrow[field] = None  # codes past int8 from now on: the kernel reads int32
            narrow = self.narrow.get(field)
            if narrow is not None:
                narrow.append(_narrow(col.data[start : start + count], narrow.data.dtype))
        self.n += count

    def take_snapshot(self) -> StreamColumns:
        if self.snapshot is None or self.snapshot.n != self.n:
            n = self.n
            arrays = {f: c.view(n) for f, c in self.cols.items()}
            nz = (n + ZONE_ROWS - 1) // ZONE_ROWS
            zones = {f: (lo.view(nz), hi.view(nz)) for f, (lo, hi) in self.zones.items()}
            narrow = {f: c.view(n) for f, c in self.narrow.items() if c is not None}
            self.snapshot = StreamColumns(self.schema, n, arrays, zones, self.dicts, narrow)
        return self.snapshot


_gc_lock = threading.Lock()
_gc_pauses = [0, False]  # active pauses, whether the collector was enabled before the first


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a big load runs (nestable, thread-safe).

    Decoding a row allocates a tree of dicts and lists that dies at once; with the collector on,
    those allocations trigger collections that cost more than the decoding (2-3x for 1M rows).
    The previous state is restored when the last pause ends.
    """
    with _gc_lock:
        if _gc_pauses[0] == 0:
            _gc_pauses[1] = gc.isenabled()
            gc.disable()
        _gc_pauses[0] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses[0] -= 1
            if _gc_pauses[0] == 0 and _gc_pauses[1]:
                gc.enable()


def _extractor(fields: tuple[str, ...]) -> Any:
    """Row buffer -> tuple of the fields' values. The decoded dict dies at once, so a load allocates
    (and the garbage collector sees) one small tuple per row instead of the row's whole object tree."""
    loads = orjson.loads
    missing = (None,) * len(fields)

    def extract(buf: memoryview) -> tuple[Any, ...]:
        try:
            d = loads(buf)
        except orjson.JSONDecodeError:  # a non-JSON row (internal streams): no values
            return missing
        return tuple(map(d.get, fields)) if type(d) is dict else missing

    return extract


class ColumnCache:
    """The columns of every stream of one LocalStore, built on first use and kept current. Thread-safe."""

    def __init__(self, store: Any, *, page_rows: int = PAGE_ROWS) -> None:
        self._store = store
        self._page = max(1, int(page_rows))
        self._streams: dict[str, _StreamState] = {}
        self._lock = threading.Lock()

    def _state(self, stream: str) -> _StreamState:
        st = self._streams.get(stream)
        if st is None:
            keys.check_name(stream, "stream")
            with self._lock:
                st = self._streams.get(stream)
                if st is None:
                    st = self._streams[stream] = _StreamState(schema_for(stream))
        return st

    def get(self, stream: str) -> StreamColumns:
        """A snapshot of `stream`'s columns including every row committed so far (by any process).

        Rows appended by a write batch that is still open are not included, even on its own thread.
        """
        st = self._state(stream)
        length = self._committed_length(stream)
        snap = st.snapshot
        if snap is not None and snap.n == length:
            return snap
        with st.lock:
            if st.n > length:  # the stream got shorter: not an append-only history we know; rebuild
                st.reset()
            if st.n < length:
                if length - st.n > GC_PAUSE_ROWS:
                    with _gc_paused():
                        self._load(st, stream, length)
                else:
                    self._load(st, stream, length)
            return st.take_snapshot()

    def _committed_length(self, stream: str) -> int:
        """The stream's committed length. Inside this thread's open write batch `stream_length` would
        also count the batch's own appends, which may still be rolled back; the stream head in `smeta`
        is only written at commit (see engine.local), so reading it keeps uncommitted rows out of the
        shared columns: queries cover committed rows."""
        db = getattr(self._store, "db_smeta", None)
        if db is None:  # not an engine.local store: trust its stream_length
            return int(self._store.stream_length(stream))
        with self._store.read_txn() as txn:
            raw = txn.get(stream.encode(), db=db)
        return 0 if raw is None else int(_SMETA.unpack(raw)[1])

    def generation(self, stream: str) -> int:
        """Rows of `stream` loaded so far (without looking at the store); 0 if never loaded."""
        st = self._streams.get(stream)
        return 0 if st is None else st.n

    def schema(self, stream: str) -> StreamSchema:
        """The column schema of `stream`."""
        return self._state(stream).schema

    def drop(self, stream: str | None = None) -> None:
        """Forget the columns of one stream (or all); they are rebuilt on the next `get()`."""
        with self._lock:
            if stream is None:
                self._streams.clear()
            else:
                self._streams.pop(stream, None)

    def rows(self, stream: str, offsets: Sequence[int]) -> list[Any]:
        """The decoded rows at these offsets, in this order (offsets past the end are left out).

        One read transaction; the cursor steps to nearby offsets and seeks to far ones; only the
        wanted rows are decoded.
        """
        got = self._store.read_at(stream, sorted(set(offsets)), orjson.loads, gap=_FETCH_GAP)
        return [got[r] for r in offsets if r in got]

    def _load(self, st: _StreamState, stream: str, target: int) -> None:
        start = st.n
        extract = None if _rowdecode is not None else _extractor(st.fields)
        while start < target:
            count = min(self._page, target - start)
            if extract is None:
                st.decode_page(self._store, stream, start, count)
                start += count
                continue
            rows = self._store.read_with(stream, start, count, extract)
            if len(rows) == count and rows[0][0] == start and rows[-1][0] == start + count - 1:
                values = [r for _, r in rows]
            else:  # a hole in the offsets (should not happen): keep row i = offset i
                values = [st.missing_row] * count
                for off, r in rows:
                    if start <= off < start + count:
                        values[off - start] = r
            st.append(values)
            start += count
