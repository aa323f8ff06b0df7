"""Typed numpy columns of every stream: what queries and analytics scan instead of JSON.

`ColumnCache(store).get(stream)` returns a `StreamColumns` snapshot: one
read-only numpy array per queryable field, all of length n, row i being
stream offset i. Which fields, and how they are typed, is one table
(`SCHEMAS`): timestamps and scores are float64 (NaN = missing), counts
int64 (INT64_MIN = missing), enum-like strings int32 codes into a per-column
dictionary that only grows (-1 = missing), bools uint8 (255 = missing).
Every stream also has `offset` (int64), and unknown streams get only
`timestamp` and `offset`. Float columns also keep a zone map (min and max
per ZONE_ROWS block) so the query kernel can skip whole blocks for time
ranges and newest-first sorts, and a float32 sketch (each value rounded to
float32); coded columns keep an int8 copy while their codes fit in int8.
These narrow companions are what the kernel's filters scan (a seed query
reads 5 bytes a row instead of 12; scans are memory-bound): rounding is
monotone, so a float32 value decides a range unless it equals a rounded
bound, and then the kernel reads the float64 value. Answers never change;
the cost is 4 bytes a row per float column and 1 per coded column.

Why this shape: the columns are built from LMDB on first use (each row
decoded once with orjson, a page of rows at a time, appended into arrays
whose capacity doubles) and then kept current incrementally: every `get()`
compares the stream's length in LMDB with the rows already loaded and decodes
only the new rows, which also picks up rows that another process appended.
Only committed rows are loaded (not those of a write batch still open), so
the cache never holds a row that could be rolled back. A snapshot never
changes after it is handed out (appends write past its end or into a new
buffer), so readers need no lock; loading is serialised per stream. Big loads
pause the cyclic garbage collector, which otherwise costs more than decoding.
"""

from __future__ import annotations

import gc
import math
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import numpy as np
import orjson

from . import keys
from .errors import UnknownFieldError

FLOAT = "float"
INT = "int"
CODE = "code"
BOOL = "bool"

MISSING_INT = int(np.iinfo(np.int64).min)
_MAX_INT = int(np.iinfo(np.int64).max)
MISSING_CODE = -1
MISSING_BOOL = 255
ZONE_ROWS = 1024  # must equal the query kernel's block size (engine._query.ZONE_ROWS)
NARROW_CODES = 128  # a coded column keeps its int8 copy while its dictionary has at most this many strings
PAGE_ROWS = 1024  # rows decoded per LMDB read transaction while loading
GC_PAUSE_ROWS = 10_000  # loads bigger than this run with the cyclic garbage collector paused
_SMETA = struct.Struct(">IQ")  # engine.local's smeta value: stream id, next offset
_FETCH_GAP = 8  # `rows()`: offsets this close share a transaction (one costs about 8 rows stepped over)

_DTYPES = {FLOAT: np.float64, INT: np.int64, CODE: np.int32, BOOL: np.uint8}
_NARROW = {FLOAT: np.float32, CODE: np.int8}  # the dtype of each kind's narrow companion


class StreamSchema:
    """The queryable fields of one stream: field name -> kind (float, int, code, bool), in order."""

    __slots__ = ("columns", "stream")

    def __init__(self, stream: str, columns: Mapping[str, str]) -> None:
        self.stream = stream
        self.columns: Mapping[str, str] = MappingProxyType({**columns, "offset": INT})

    def __contains__(self, field: object) -> bool:
        return field in self.columns

    def __repr__(self) -> str:
        return f"StreamSchema({self.stream!r}, {dict(self.columns)!r})"


def _schema(stream: str, **columns: str) -> StreamSchema:
    return StreamSchema(stream, {"timestamp": FLOAT, **columns})


SCHEMAS: Mapping[str, StreamSchema] = MappingProxyType(
    {
        s.stream: s
        for s in (
            _schema(
                keys.RL_ACTIONS,
                action_type=CODE,
                environment=CODE,
                reward=FLOAT,
                confidence=FLOAT,
                execution_time=FLOAT,
                context_hash=CODE,
            ),
            _schema(keys.SYSTEM_LOGS, level=CODE, source=CODE, environment=CODE, session_id=CODE),
            _schema(
                keys.SIGNATURE_METRICS,
                signature_name=CODE,
                performance_score=FLOAT,
                success_rate=FLOAT,
                avg_response_time=FLOAT,
            ),
            _schema(
                keys.VERIFIER_METRICS,
                verifier_name=CODE,
                accuracy=FLOAT,
                checks_performed=INT,
                issues_found=INT,
            ),
            _schema(
                keys.TRAINING_HISTORY,
                session_id=CODE,
                epoch=INT,
                training_accuracy=FLOAT,
                validation_accuracy=FLOAT,
                loss=FLOAT,
                learning_rate=FLOAT,
                batch_size=INT,
                model_type=CODE,
                environment=CODE,
            ),
            _schema(keys.RETRIEVAL_EVENTS, workspace_path=CODE),
            _schema(
                keys.PATCH_HISTORY,
                applied=BOOL,
                confidence_score=FLOAT,
                blast_radius=FLOAT,
                environment=CODE,
            ),
            _schema(keys.CONTEXT_HISTORY, agent_state=CODE, environment=CODE),
            _schema(keys.HEALTH_HISTORY),
        )
    }
)


def schema_for(stream: str) -> StreamSchema:
    """The schema of `stream`; streams not in the table get timestamp + offset only."""
    return SCHEMAS.get(stream) or _schema(stream)


# ---------------------------------------------------------------------------- value conversion
_NUMBER_TYPES = {float, int, bool, type(None)}


def is_missing(v: Any) -> bool:
    """None or NaN: a value that no filter matches and that sorts last."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def is_number(v: Any) -> bool:
    """An int, float, bool or numpy number (not a string)."""
    return isinstance(v, (int, float, np.number)) and not isinstance(v, str)


def in_range(v: Any, lo: Any, hi: Any) -> bool:
    """`lo <= v <= hi` with None bounds open; missing or incomparable values (str vs float) do not match."""
    if is_missing(v):
        return False
    try:
        return bool((lo is None or lo <= v) and (hi is None or v <= hi))
    except TypeError:
        return False


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


class _Dictionary:
    """Code <-> string for one coded column. Grows only, so codes handed out stay valid forever."""

    __slots__ = ("index", "values")

    def __init__(self) -> None:
        self.values: list[str] = []
        self.index: dict[Any, int] = {None: MISSING_CODE}

    def encode(self, vals: Sequence[Any]) -> np.ndarray:
        get = self.index.get
        if set(map(type, vals)) <= {str, type(None)}:
            codes = [get(v, -2) for v in vals]
            if -2 not in codes:
                return np.array(codes, dtype=np.int32)
        out = np.empty(len(vals), dtype=np.int32)
        for i, v in enumerate(vals):
            if type(v) is str:
                c = get(v)
                if c is None:
                    c = self.index[v] = len(self.values)
                    self.values.append(v)
                out[i] = c
            else:
                out[i] = MISSING_CODE  # not a string (or None): missing
        return out


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


class StreamColumns:
    """A read-only snapshot of one stream's columns: rows [0, n), row i = stream offset i."""

    __slots__ = ("_arrays", "_dicts", "_narrow", "_ncodes", "_zones", "n", "schema", "stream")

    def __init__(
        self,
        schema: StreamSchema,
        n: int,
        arrays: dict[str, np.ndarray],
        zones: dict[str, tuple[np.ndarray, np.ndarray]],
        dicts: dict[str, _Dictionary],
        narrow: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.stream = schema.stream
        self.schema = schema
        self.n = n
        self._arrays = arrays
        self._zones = zones
        self._narrow = narrow or {}
        self._dicts = dicts
        self._ncodes = {f: len(d.values) for f, d in dicts.items()}

    @property
    def generation(self) -> int:
        """Rows loaded (the stream's length when the snapshot was taken); changes on every append."""
        return self.n

    def __len__(self) -> int:
        return self.n

    def __contains__(self, field: object) -> bool:
        return field in self._arrays

    def __repr__(self) -> str:
        return f"<StreamColumns {self.stream!r} n={self.n} fields={list(self._arrays)}>"

    def _check(self, field: str) -> None:
        if field not in self._arrays:
            raise UnknownFieldError(
                f"stream {self.stream!r} has no column {field!r}",
                hint=f"columns: {', '.join(self._arrays)}",
            )

    @property
    def fields(self) -> tuple[str, ...]:
        """The column names, in schema order."""
        return tuple(self._arrays)

    def column(self, field: str) -> np.ndarray:
        """The read-only array of `field` (length n); UnknownFieldError if the stream has no such column."""
        self._check(field)
        return self._arrays[field]

    def kind(self, field: str) -> str:
        """`float`, `int`, `code` or `bool`."""
        self._check(field)
        return self.schema.columns[field]

    def zones(self, field: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(block min, block max) per ZONE_ROWS rows of a float column (NaN skipped), else None."""
        self._check(field)
        return self._zones.get(field)

    def narrow(self, field: str) -> np.ndarray | None:
        """The narrow companion of `field` (float32 sketch of a float column, int8 copy of a coded
        column whose codes fit), or None. Only the query kernel's filters need it."""
        self._check(field)
        return self._narrow.get(field)

    def ncodes(self, field: str) -> int:
        """How many distinct strings the coded column `field` had when the snapshot was taken."""
        self._check(field)
        return self._ncodes.get(field, 0)

    def code(self, field: str, value: Any) -> int | None:
        """The code of `value` in a coded column (-1 for None); None if no row of the snapshot has it."""
        self._check(field)
        d = self._dicts.get(field)
        if d is None:
            return None
        try:
            c = d.index.get(value)
        except TypeError:  # unhashable: never a string
            return None
        return c if c is not None and c < self._ncodes[field] else None

    def categories(self, field: str) -> list[str]:
        """The strings of a coded column by code (code i -> categories[i])."""
        self._check(field)
        d = self._dicts.get(field)
        return [] if d is None else d.values[: self._ncodes[field]]

    def predicate(self, flt: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The kernel predicate (engine._query.select) for a filter ("eq", field, value), ("in", field,
        values) or ("range", field, lo, hi) on this snapshot; None when it can match no row.

        Values mean what they mean in Python: a coded column holds strings (a range over it is a set of
        codes), a bool column matches 0/1/True/False, and None matches missing values.
        """
        op, field = flt[0], flt[1]
        kind, col = self.kind(field), self.column(field)
        if kind == CODE:
            if op == "range":
                if not all(b is None or isinstance(b, str) for b in flt[2:4]):
                    return None
                codes = [c for c, s in enumerate(self.categories(field)) if in_range(s, flt[2], flt[3])]
            else:
                values = (flt[2],) if op == "eq" else flt[2]
                found = (self.code(field, v) if v is None or isinstance(v, str) else None for v in values)
                codes = [c for c in found if c is not None]
            return ("in", col, codes, self._narrow.get(field)) if codes else None
        if kind == BOOL:
            values = (flt[2],) if op == "eq" else flt[2] if op == "in" else (False, True)
            if op == "range":
                values = tuple(v for v in values if in_range(v, flt[2], flt[3]))
            codes = sorted({-1 if v is None else int(v) for v in values if v is None or v in (0, 1)})
            return ("in", col, codes) if codes else None
        lo, hi = (flt[2], flt[2]) if op == "eq" else (flt[2], flt[3])
        if op == "eq" and lo is None:
            return ("missing", col)
        if op == "eq" and (
            not is_number(lo) or is_missing(lo) or (kind == INT and not float(lo).is_integer())
        ):
            return None
        if not all(b is None or is_number(b) for b in (lo, hi)):
            return None
        return ("range", col, lo, hi, self.zones(field), self._narrow.get(field))

    def sort_key(self, field: str, reverse: bool) -> tuple[Any, ...]:
        """(column, descending, code ranks or None, zones or None): the sort arguments of the kernel.
        Coded columns sort by their strings."""
        col = self.column(field)
        if self.kind(field) != CODE:
            return col, reverse, None, self.zones(field)
        cats = self.categories(field)
        rank = np.empty(len(cats), dtype=np.float64)
        rank[np.array(sorted(range(len(cats)), key=cats.__getitem__), dtype=np.int64)] = np.arange(len(cats))
        return col, reverse, rank, None


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
        self.dicts = {f: _Dictionary() for f, k in self.schema.columns.items() if k == CODE}
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
        """Append rows given as tuples of `self.fields` values."""
        start = self.n
        count = len(rows)
        self.cols["offset"].append(np.arange(start, start + count, dtype=np.int64))
        for field, vals in zip(self.fields, zip(*rows, strict=True), strict=True):
            kind = self.schema.columns[field]
            col = self.cols[field]
            if kind == FLOAT:
                col.append(_floats(vals))
                zmin, zmax = self.zones[field]
                _zone_update(col, zmin, zmax, start)
            elif kind == CODE:
                col.append(self.dicts[field].encode(vals))
                if len(self.dicts[field].values) > NARROW_CODES:
                    self.narrow[field] = None  # codes past int8 from now on: the kernel reads int32
            elif kind == INT:
                col.append(_ints(vals))
            else:
                col.append(_bools(vals))
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

        Nearby offsets share one read transaction (stepping the cursor over a row is far cheaper than
        a transaction); only the wanted rows are decoded.
        """
        got: dict[int, Any] = {}
        want = sorted(set(offsets))
        i = 0
        while i < len(want):
            j = i
            while j + 1 < len(want) and want[j + 1] - want[j] <= _FETCH_GAP:
                j += 1
            wanted, pos = set(want[i : j + 1]), [want[i]]

            def decode(buf: memoryview, wanted: set[int] = wanted, pos: list[int] = pos) -> Any:
                pos[0] += 1  # read_with walks consecutive offsets from the start of the run
                return orjson.loads(buf) if pos[0] - 1 in wanted else None

            for off, value in self._store.read_with(stream, want[i], want[j] - want[i] + 1, decode):
                if off in wanted:
                    got[off] = value
            i = j + 1
        return [got[r] for r in offsets if r in got]

    def _load(self, st: _StreamState, stream: str, target: int) -> None:
        start = st.n
        extract = _extractor(st.fields)
        while start < target:
            count = min(self._page, target - start)
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
