"""`QueryBuilder` and `QueryResult`: the old chainable query API, over columns instead of objects.

A builder bound to an engine stream (`eng.query("rl_actions")`) compiles its field filters and sort
into predicates on the stream's typed columns (engine.columns) and runs one fused native pass
(engine._query: filter, count and top-k together). Only the rows of the final page are then read
from LMDB, by offset, and decoded into records. Python predicates (`filter(pred)`), `sort_by(keyfn)`
and filters on fields that have no column run afterwards on the decoded candidates: correct, but
they decode every candidate.

`execute(data)` keeps the old in-memory behaviour on a list of records or dicts, without the old
defects: dicts work, the caller's list is never mutated (or sorted), and a None, NaN or incomparable
value simply does not match a range. Semantics are the same on both paths: ranges are inclusive and
None bounds are open; sorts are stable (equal keys keep stream/list order, as Python's `sorted`
does even with reverse=True) and missing values sort last in both directions.

The kernel itself, native or (ENGINE_PURE=1) its numpy reference, comes from engine.scan; its names are
re-exported here, where they were first defined.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import time
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any

from . import keys
from .columns import (
    BOOL,
    CODE,
    FLOAT,
    INT,
    StreamColumns,
    in_range,
    is_missing,
    is_number,
    schema_for,
)
from .errors import UnknownFieldError, ValidationError
from .scan import _Reference as _Reference
from .scan import aggregate_by_reference as aggregate_by_reference
from .scan import aggregate_reference as aggregate_reference
from .scan import kernel
from .scan import select_reference as select_reference


# ---------------------------------------------------------------------------- results
@dataclasses.dataclass
class QueryResult:
    """One page of a query: `data` (records, or dicts for streams without a record type), the number of
    matching rows before offset/limit, and the seconds it took."""

    data: list[Any]
    total_count: int
    execution_time: float
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: records become their `to_dict()` form."""
        return {
            "data": [d.to_dict() if hasattr(d, "to_dict") else d for d in self.data],
            "total_count": self.total_count,
            "execution_time": self.execution_time,
            "cached": self.cached,
        }


# ---------------------------------------------------------------------------- value semantics
def _norm(v: Any) -> Any:
    return v.value if isinstance(v, Enum) else v


def _bound(v: Any) -> Any:
    if isinstance(v, datetime.datetime):
        return v.timestamp()
    return _norm(v)


def _values(items: list[Any], field: str) -> list[Any]:
    """`field` of every item (dict key or attribute; None when absent), enums as their values."""
    kinds = set(map(type, items))
    if kinds == {dict}:
        vals = [it.get(field) for it in items]
    elif dict not in kinds:
        vals = [getattr(it, field, None) for it in items]
    else:
        vals = [it.get(field) if type(it) is dict else getattr(it, field, None) for it in items]
    # str/int enums already compare as their values; only other enums need converting
    if any(issubclass(t, Enum) and not issubclass(t, (str, int)) for t in set(map(type, vals))):
        vals = [_norm(v) for v in vals]
    return vals


def _apply(flt: tuple[Any, ...], items: list[Any]) -> list[Any]:
    """The items that pass one field filter (one pass, no per-item function calls on the common path)."""
    op, vals = flt[0], _values(items, flt[1])
    if op == "eq":
        t = flt[2]
        return [it for it, v in zip(items, vals, strict=True) if v == t]
    if op == "in":
        return [it for it, v in zip(items, vals, strict=True) if v in flt[2]]
    lo, hi = flt[2], flt[3]
    pairs = zip(items, vals, strict=True)
    try:
        if lo is not None and hi is not None:
            return [it for it, v in pairs if v is not None and lo <= v <= hi]
        if lo is not None:
            return [it for it, v in pairs if v is not None and lo <= v]
        if hi is not None:
            return [it for it, v in pairs if v is not None and v <= hi]
    except TypeError:  # some value is not comparable with the bounds: sort it out item by item
        pass
    return [it for it, v in zip(items, vals, strict=True) if in_range(v, lo, hi)]


def _get(item: Any, field: str) -> Any:
    return item.get(field) if isinstance(item, dict) else getattr(item, field, None)


def _has(item: Any, field: str) -> bool:
    return field in item if isinstance(item, dict) else hasattr(item, field)


def _sorted_by(items: list[Any], key: Callable[[Any], Any], reverse: bool) -> list[Any]:
    """Stable sort, missing keys last in either direction."""
    keyed = [(key(it), it) for it in items]
    present = [(k, it) for k, it in keyed if not is_missing(k)]
    try:
        out = [it for _, it in sorted(present, key=lambda t: t[0], reverse=reverse)]
    except TypeError as exc:
        raise ValidationError(f"cannot sort: the sort values are not comparable ({exc})") from None
    return out + [it for k, it in keyed if is_missing(k)]


def _engine_of(source: Any) -> Any:
    if source is None:
        return None
    if hasattr(source, "columns") and hasattr(source, "store"):
        return source
    inner = getattr(source, "engine", None)
    return inner if inner is not None and hasattr(inner, "columns") else None


def _model_for(stream: str | None) -> Any:
    from . import models  # a soft dependency: columns and the kernel work without it

    return {
        keys.RL_ACTIONS: models.ActionRecord,
        keys.SYSTEM_LOGS: models.LogEntry,
        keys.TRAINING_HISTORY: models.TrainingMetrics,
        keys.RETRIEVAL_EVENTS: models.RetrievalEventRecord,
        keys.CONTEXT_HISTORY: models.ContextState,
        keys.PATCH_HISTORY: models.PatchRecord,
    }.get(stream or "")


def stream_fields(stream: str) -> frozenset[str] | None:
    """Every field a row of `stream` can have; None for streams whose rows are free-form."""
    model = _model_for(stream)
    if model is not None:
        return frozenset(f.name for f in dataclasses.fields(model))
    if stream in (keys.SIGNATURE_METRICS, keys.VERIFIER_METRICS):  # summary rows: exactly the columns
        return frozenset(schema_for(stream).columns)
    return None


# ---------------------------------------------------------------------------- the builder
class QueryBuilder:
    """Chainable query: `eng.query("rl_actions").filter_by_field("action_type", ActionType.CODE_EDIT)
    .filter_by_range("reward", 0.7, 1.0).sort_by_field("timestamp", reverse=True).limit(10).execute()`.

    `QueryBuilder(source, stream)`: `source` is an Engine (or an object with an `engine`), or anything
    (the old data manager) when only `execute(data)` is used.
    """

    def __init__(self, source: Any = None, stream: str | None = None) -> None:
        self.source = source
        self.data_manager = source  # the old attribute name
        self.stream = None if stream is None else keys.check_name(stream, "stream")
        self._engine = _engine_of(source)
        self._fields = None if stream is None else stream_fields(stream)
        self._columns = None if stream is None else schema_for(stream).columns
        self._filters: list[tuple[Any, ...]] = []  # ("eq", f, v) | ("in", f, values) | ("range", f, lo, hi)
        self._preds: list[Callable[[Any], Any]] = []
        self._sort: tuple[str, bool] | None = None
        self._keyfn: tuple[Callable[[Any], Any], bool] | None = None
        self._limit: int | None = None
        self._offset = 0

    # ------------------------------------------------------------------ chain
    def _check(self, field: Any) -> str:
        if not isinstance(field, str) or not field:
            raise ValidationError(f"a field name must be a non-empty str, got {field!r}")
        if self._columns is not None and field not in self._columns:
            if self._fields is not None and field not in self._fields:
                raise UnknownFieldError(
                    f"stream {self.stream!r} has no field {field!r}",
                    hint=f"fields: {', '.join(sorted(self._fields | set(self._columns)))}",
                )
        return field

    def filter(self, predicate: Callable[[Any], Any]) -> QueryBuilder:
        """Keep items for which `predicate(item)` is true (run on decoded records, after field filters)."""
        if not callable(predicate):
            raise ValidationError("filter() needs a callable")
        self._preds.append(predicate)
        return self

    def filter_by_field(self, field: str, value: Any) -> QueryBuilder:
        """Keep items whose `field` equals `value` (enum members and their strings are the same)."""
        self._filters.append(("eq", self._check(field), _norm(value)))
        return self

    def filter_in(self, field: str, values: Iterable[Any]) -> QueryBuilder:
        """Keep items whose `field` is one of `values`."""
        if isinstance(values, (str, bytes)):
            raise ValidationError("filter_in() needs a collection of values, not a string")
        self._filters.append(("in", self._check(field), tuple(_norm(v) for v in values)))
        return self

    def filter_by_range(self, field: str, lo: Any, hi: Any) -> QueryBuilder:
        """Keep items with `lo <= field <= hi` (inclusive, None bounds open). Missing values never match."""
        self._filters.append(("range", self._check(field), _bound(lo), _bound(hi)))
        return self

    def filter_by_time_range(self, field: str, start: Any, end: Any) -> QueryBuilder:
        """`filter_by_range` for times: epoch seconds or datetimes."""
        return self.filter_by_range(field, start, end)

    def since(self, hours: float = 24.0) -> QueryBuilder:
        """Keep items with `timestamp >= now - hours * 3600` (now = when this is called)."""
        if not is_number(hours) or isinstance(hours, bool) or not math.isfinite(hours):
            raise ValidationError(f"hours must be a finite number, got {hours!r}")
        return self.filter_by_range("timestamp", time.time() - float(hours) * 3600.0, None)

    def sort_by_field(self, field: str, reverse: bool = False) -> QueryBuilder:
        """Sort by `field` (stable; missing values last). Replaces an earlier sort."""
        self._sort, self._keyfn = (self._check(field), bool(reverse)), None
        return self

    def sort_by(self, key: Callable[[Any], Any], reverse: bool = False) -> QueryBuilder:
        """Sort by `key(item)` on decoded records (stable). Replaces an earlier sort."""
        if not callable(key):
            raise ValidationError("sort_by() needs a callable")
        self._keyfn, self._sort = (key, bool(reverse)), None
        return self

    def limit(self, n: int | None) -> QueryBuilder:
        """At most `n` items (None: no limit)."""
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
            raise ValidationError(f"limit must be a non-negative int or None, got {n!r}")
        self._limit = n
        return self

    def offset(self, n: int) -> QueryBuilder:
        """Skip the first `n` matching items."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValidationError(f"offset must be a non-negative int, got {n!r}")
        self._offset = n
        return self

    def cache_key(self) -> tuple[Any, ...] | None:
        """A hashable description of the query, or None when it cannot be cached (Python callables)."""
        if self.stream is None or self._preds or self._keyfn is not None:
            return None
        try:
            flts = tuple(f if f[0] != "in" else ("in", f[1], frozenset(f[2])) for f in self._filters)
            key = ("query", self.stream, flts, self._sort, self._limit, self._offset)
            hash(key)
        except TypeError:  # an unhashable filter value
            return None
        return key

    # ------------------------------------------------------------------ execution
    def execute(self, data: Iterable[Any] | None = None) -> QueryResult:
        """Run the query on `data` (records or dicts; never modified), or on the engine stream if None."""
        t0 = time.perf_counter()
        if data is not None:
            items, total = self._run_data(list(data))
        else:
            items, total = self._run_stream()
        return QueryResult(items, total, time.perf_counter() - t0)

    def count(self, data: Iterable[Any] | None = None) -> int:
        """How many items match (offset and limit ignored)."""
        if data is None and self._fast_path(need_sort=False):
            snap, kpreds, never = self._compile()
            return 0 if never else int(kernel.aggregate(snap.n, kpreds)[0])
        return len(self._matching(data))

    def aggregate(
        self, field: str, by: str | None = None, data: Iterable[Any] | None = None
    ) -> dict[Any, Any]:
        """count/sum/mean/min/max of `field` over the matching items, overall or per value of `by`.

        `count` counts matching items, the others their non-missing values (mean/min/max None if none).
        Per group: `{value: {...}}` for the groups that have items; items without a `by` value are left out.
        """
        self._check(field)
        if by is not None:
            self._check(by)
        if data is None and self._fast_path(need_sort=False) and self._aggregatable(field, by):
            return self._aggregate_columns(field, by)
        if data is not None:
            data = list(data)
            self._check_data(data, (field,) if by is None else (field, by))
        matched = self._matching(data)
        if by is None:
            return _summary(matched, field)
        groups: dict[Any, list[Any]] = {}
        for it in matched:
            g = _norm(_get(it, by))
            if not is_missing(g):
                groups.setdefault(g, []).append(it)
        return {g: _summary(its, field) for g, its in groups.items()}

    # ------------------------------------------------------------------ the in-memory path
    def _check_data(self, items: list[Any], extra: tuple[str, ...] = ()) -> None:
        fields = {f[1] for f in self._filters} | ({self._sort[0]} if self._sort else set()) | set(extra)
        for f in sorted(fields):
            if items and not any(_has(it, f) for it in items):
                raise UnknownFieldError(f"no item has a field {f!r}")

    def _filter_items(self, items: list[Any]) -> list[Any]:
        self._check_data(items)
        for flt in self._filters:
            items = _apply(flt, items)
        for pred in self._preds:
            items = [it for it in items if pred(it)]
        return items

    def _page(self, items: list[Any]) -> tuple[list[Any], int]:
        if self._keyfn is not None:
            items = _sorted_by(items, self._keyfn[0], self._keyfn[1])
        elif self._sort is not None:
            field = self._sort[0]
            items = _sorted_by(items, lambda it: _norm(_get(it, field)), self._sort[1])
        end = None if self._limit is None else self._offset + self._limit
        return items[self._offset : end], len(items)

    def _run_data(self, items: list[Any]) -> tuple[list[Any], int]:
        return self._page(self._filter_items(items))

    def _matching(self, data: Iterable[Any] | None) -> list[Any]:
        if data is not None:
            return self._filter_items(list(data))
        snap, kpreds, never = self._compile()
        if never:
            return []
        rows, _ = kernel.select(snap.n, kpreds, None, False, None, 0, -1)
        return self._post(self._fetch(rows.tolist()))

    # ------------------------------------------------------------------ the column path
    def _require_stream(self) -> None:
        if self._engine is None or self.stream is None:
            raise ValidationError(
                "this QueryBuilder has no engine stream: pass data to execute(), or build it with "
                "eng.query(stream) / QueryBuilder(eng, stream)"
            )

    def _on_column(self, flt: tuple[Any, ...]) -> bool:
        """True if the kernel can evaluate this filter (the field has a column; `in` needs codes or bools)."""
        assert self._columns is not None
        kind = self._columns.get(flt[1])
        return kind is not None and (flt[0] != "in" or kind in (CODE, BOOL))

    def _column_fields(self) -> bool:
        return all(self._on_column(f) for f in self._filters)

    def _fast_path(self, need_sort: bool = True) -> bool:
        self._require_stream()
        assert self._columns is not None
        if self._preds or not self._column_fields():
            return False
        if need_sort:
            return self._keyfn is None and (self._sort is None or self._sort[0] in self._columns)
        return True

    def _compile(self) -> tuple[StreamColumns, list[tuple[Any, ...]], bool]:
        """(snapshot, kernel predicates for the column filters, True if some filter matches nothing)."""
        assert self._engine is not None and self.stream is not None
        snap = self._engine.columns.get(self.stream)
        preds: list[tuple[Any, ...]] = []
        for flt in self._filters:
            if not self._on_column(flt):
                continue  # applied after decoding
            pred = snap.predicate(flt)
            if pred is None:
                return snap, [], True
            preds.append(pred)
        preds.sort(key=lambda p: (p[1].dtype.itemsize != 4, p[0] != "in"))  # narrow code columns first
        return snap, preds, False

    def _fetch(self, rows: Sequence[int]) -> list[Any]:
        assert self._engine is not None and self.stream is not None
        return self._engine.columns.rows(self.stream, rows)

    def _post(self, rows: list[Any]) -> list[Any]:
        """Filters without a column on the decoded rows, then records, then Python predicates."""
        for flt in self._filters:
            if not self._on_column(flt):
                rows = _apply(flt, [r for r in rows if isinstance(r, dict)])
        model = _model_for(self.stream)
        items = [model.from_json_row(r) for r in rows] if model is not None else rows
        for pred in self._preds:
            items = [it for it in items if pred(it)]
        return items

    def _run_stream(self) -> tuple[list[Any], int]:
        self._require_stream()
        snap, kpreds, never = self._compile()
        if never:
            return [], 0
        sort: tuple[Any, ...] = (None, False, None, None)
        if self._sort is not None and self._sort[0] in snap:
            sort = snap.sort_key(*self._sort)
        if self._fast_path():
            limit = -1 if self._limit is None else self._limit
            rows, total = kernel.select(
                snap.n, kpreds, sort[0], sort[1], sort[2], self._offset, limit, sort[3]
            )
            return self._post(self._fetch(rows.tolist())), int(total)
        rows, _ = kernel.select(snap.n, kpreds, sort[0], sort[1], sort[2], 0, -1, sort[3])
        items = self._post(self._fetch(rows.tolist()))
        if self._keyfn is None and self._sort is not None and self._sort[0] in snap:
            end = None if self._limit is None else self._offset + self._limit
            return items[self._offset : end], len(items)  # already in sort order
        return self._page(items)

    def _aggregatable(self, field: str, by: str | None) -> bool:
        assert self._columns is not None
        return self._columns.get(field) in (FLOAT, INT, BOOL) and (
            by is None or self._columns.get(by) in (CODE, BOOL)
        )

    def _aggregate_columns(self, field: str, by: str | None) -> dict[Any, Any]:
        snap, kpreds, never = self._compile()
        value = snap.column(field)
        if by is None:
            if never:
                return _stats(0, 0, 0.0, None, None)
            r, c, s, lo, hi = kernel.aggregate(snap.n, kpreds, value)
            return _stats(r, c, s, lo, hi)
        if snap.kind(by) == CODE:
            labels: list[Any] = snap.categories(by)
        else:
            labels = [False, True]
        if never:
            return {}
        r, c, s, lo, hi = kernel.aggregate_by(snap.n, kpreds, snap.column(by), len(labels), value)
        return {labels[g]: _stats(r[g], c[g], s[g], lo[g], hi[g]) for g in range(len(labels)) if r[g] > 0}


def _summary(items: list[Any], field: str) -> dict[str, Any]:
    vals = [float(v) for v in (_norm(_get(it, field)) for it in items) if is_number(v) and not is_missing(v)]
    return _stats(len(items), len(vals), math.fsum(vals), min(vals, default=None), max(vals, default=None))


def _stats(rows: Any, count: Any, total: Any, lo: Any, hi: Any) -> dict[str, Any]:
    def opt(v: Any) -> float | None:
        return None if v is None or math.isnan(v) else float(v)

    count = int(count)
    return {
        "count": int(rows),
        "sum": float(total),
        "mean": float(total) / count if count else None,
        "min": opt(lo) if count else None,
        "max": opt(hi) if count else None,
    }
