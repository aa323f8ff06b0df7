"""What a stream's typed columns are: the schema table, the missing-value sentinels, the snapshot.

One table (`SCHEMAS`) says which fields of each stream are columns and how they are typed:
timestamps and scores are float64 (NaN = missing), counts int64 (INT64_MIN = missing), enum-like
strings int32 codes into a per-column dictionary that only grows (-1 = missing), bools uint8 (255 =
missing). Every stream also has `offset` (int64), and unknown streams get only `timestamp` and
`offset`. A `StreamColumns` snapshot holds one read-only numpy array per column, all of length n,
row i being stream offset i, and compiles query filters and sorts into the scan kernel's arguments
(engine.scan). Float columns come with a zone map (min and max per ZONE_ROWS block) so the kernel
can skip whole blocks for time ranges and newest-first sorts, and with a float32 sketch (each value
rounded to float32); coded columns with an int8 copy while their codes fit in int8. These narrow
companions are what the kernel's filters scan (a seed query reads 5 bytes a row instead of 12;
scans are memory-bound): rounding is monotone, so a float32 value decides a range unless it equals
a rounded bound, and then the kernel reads the float64 value. Answers never change; the cost is 4
bytes a row per float column and 1 per coded column.

engine.columns builds the snapshots from LMDB and keeps them current (and re-exports these names).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from . import keys
from .errors import UnknownFieldError

FLOAT = "float"
INT = "int"
CODE = "code"
BOOL = "bool"

MISSING_INT = int(np.iinfo(np.int64).min)
_I64_MAX = int(np.iinfo(np.int64).max)
MISSING_CODE = -1
MISSING_BOOL = 255
ZONE_ROWS = 1024  # must equal the query kernel's block size (engine._query.ZONE_ROWS)


def int_bounds(lo: Any, hi: Any) -> tuple[int, int] | None:
    """Inclusive int64 bounds for an int column's range filter from number/None bounds: lo rounded
    up, hi down, clamped so that the missing marker MISSING_INT stays outside; None when nothing can
    match (a NaN bound, lo = +inf, hi = -inf, or an empty range). The native filter and the
    reference both use it."""
    bounds = []
    for b, is_lo in ((lo, True), (hi, False)):
        if isinstance(b, (float, np.floating)):
            b = float(b)
            if math.isnan(b) or b == (math.inf if is_lo else -math.inf):
                return None
            b = None if math.isinf(b) else (math.ceil(b) if is_lo else math.floor(b))
        bounds.append(None if b is None else int(b))
    lo_i = MISSING_INT + 1 if bounds[0] is None else max(bounds[0], MISSING_INT + 1)
    hi_i = _I64_MAX if bounds[1] is None else min(bounds[1], _I64_MAX)
    return (lo_i, hi_i) if lo_i <= _I64_MAX and hi_i > MISSING_INT else None


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


# ---------------------------------------------------------------------------- value semantics
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


class CodeDictionary:
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


class StreamColumns:
    """A read-only snapshot of one stream's columns: rows [0, n), row i = stream offset i."""

    __slots__ = ("_arrays", "_dicts", "_narrow", "_ncodes", "_zones", "n", "schema", "stream")

    def __init__(
        self,
        schema: StreamSchema,
        n: int,
        arrays: dict[str, np.ndarray],
        zones: dict[str, tuple[np.ndarray, np.ndarray]],
        dicts: dict[str, CodeDictionary],
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
