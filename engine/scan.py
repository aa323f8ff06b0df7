"""The column scans behind queries and analytics, and the reference each native kernel is held to.

`kernel` is what engine.query and engine.analytics call: `select` (filter, count and the top-k page in
one pass) from engine._query and `aggregate` / `aggregate_by` from engine._aggregate, both scanning
through engine._filter. With ENGINE_PURE=1 it is the reference instead: plain numpy masks and Python's
stable `sorted`, slow and obviously right. It lives here, next to the switch, so that the tests can
hold the native kernels to it on any input; a kernel that is not built raises NativeExtensionError
(engine._native) instead of falling back.
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _native
from .columns import MISSING_INT, ZONE_ROWS
from .errors import ValidationError
from .streamcolumns import int_bounds


# ---------------------------------------------------------------------------- reference kernel
def _ref_column(col: Any, n: int) -> np.ndarray:
    if not isinstance(col, np.ndarray) or col.ndim != 1:
        raise ValidationError("a column must be a 1-D numpy array")
    if col.shape[0] < n:
        raise ValidationError(f"a column has {col.shape[0]} rows, fewer than n={n}")
    c = col[:n].view(np.uint8) if col.dtype == np.bool_ else col[:n]
    if (c.dtype.kind, c.dtype.itemsize) not in (("f", 8), ("i", 8), ("i", 4), ("u", 1)):
        raise ValidationError(f"unsupported column dtype {c.dtype}")
    return c


def _ref_missing(c: np.ndarray) -> np.ndarray:
    if c.dtype.kind == "f":
        return np.isnan(c)
    if c.dtype.itemsize == 8:
        return c == MISSING_INT
    return c < 0 if c.dtype.itemsize == 4 else c > 1


_ARITY = {"eq": (3, 4), "in": (3, 4), "range": (4, 5, 6), "missing": (2,)}


def _ref_narrow(spec: tuple[Any, ...], c: np.ndarray, n: int) -> None:
    """Check a predicate's narrow companion (see engine._query.select); the reference never reads it."""
    narrow = spec[3] if spec[0] in ("eq", "in") and len(spec) == 4 else spec[5] if len(spec) == 6 else None
    if narrow is None:
        return
    kind, op = (c.dtype.kind, c.dtype.itemsize), spec[0]
    want: type[np.generic] | None
    if op == "eq" and spec[2] is None:
        want = None  # a test for missing values reads the column itself
    elif kind == ("i", 4) and op in ("eq", "in"):
        want = np.int8
    elif kind == ("f", 8) and op in ("eq", "range"):
        want = np.float32
    else:
        want = None
    if want is None:
        raise ValidationError("a narrow companion goes only with an int32 code column or a float64 range")
    if not isinstance(narrow, np.ndarray) or narrow.ndim != 1 or narrow.dtype != want:
        raise ValidationError(f"a narrow companion of this column must be a 1-D {np.dtype(want)} array")
    if narrow.shape[0] < n:
        raise ValidationError(f"a narrow companion has {narrow.shape[0]} rows, fewer than n={n}")


def _ref_mask(spec: tuple[Any, ...], n: int) -> np.ndarray:
    if not isinstance(spec, tuple) or len(spec) < 2 or len(spec) not in _ARITY.get(spec[0], (len(spec),)):
        raise ValidationError(f"a malformed predicate: {spec!r}")
    op, c = spec[0], _ref_column(spec[1], n)
    _ref_narrow(spec, c, n)
    code_like = c.dtype.kind in "iu" and c.dtype.itemsize in (1, 4)
    if op == "eq":
        v = spec[2]
        if v is None:
            op, spec = "missing", spec[:2]
        elif code_like:
            op, spec = "in", (op, spec[1], (v,))
        else:
            op, spec = "range", (op, spec[1], v, v)
    if op == "missing":
        return _ref_missing(c)
    if op == "in":
        if not code_like:
            raise ValidationError("an 'in' predicate needs an int32 code column or a uint8/bool column")
        allowed = {int(v) for v in spec[2] if int(v) >= -1}  # codes below -1 never match
        if c.dtype.itemsize == 1:
            allowed = {v for v in allowed if 0 <= v <= 255} | (set(range(2, 256)) if -1 in allowed else set())
        return np.isin(c, np.array(sorted(allowed), dtype=np.int64))
    if op == "range":
        lo, hi = spec[2], spec[3]
        if any(
            b is not None and (isinstance(b, str) or not isinstance(b, (int, float, np.number)))
            for b in (lo, hi)
        ):
            raise ValidationError(f"a range bound must be a number or None, got {lo!r}, {hi!r}")
        if c.dtype.kind == "f":
            flo = -math.inf if lo is None else float(lo)
            fhi = math.inf if hi is None else float(hi)
            return (c >= flo) & (c <= fhi)
        if code_like:
            raise ValidationError("a 'range' predicate needs a float64 or int64 column")
        bounds = int_bounds(lo, hi)
        if bounds is None:
            return np.zeros(n, dtype=bool)
        return (c >= bounds[0]) & (c <= bounds[1])
    raise ValidationError(f"unknown predicate op {op!r}")


def _ref_filter(n: int, preds: Iterable[tuple[Any, ...]]) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    for spec in preds:
        mask &= _ref_mask(spec, n)
    return np.flatnonzero(mask)


def _ref_values(col: Any, rows: np.ndarray, n: int, rank: Any = None) -> list[float]:
    c = _ref_column(col, n)
    if c.dtype.kind == "i" and c.dtype.itemsize == 4:
        r = np.asarray(rank, dtype=np.float64)
        return [float(r[x]) if 0 <= x < r.shape[0] else math.nan for x in c[rows].tolist()]
    vals = c[rows].astype(np.float64)
    vals[_ref_missing(c[rows])] = np.nan
    return vals.tolist()


def select_reference(
    n: int,
    preds: Iterable[tuple[Any, ...]] = (),
    sort: Any = None,
    descending: bool = False,
    sort_rank: Any = None,
    offset: int = 0,
    limit: int = -1,
    sort_zones: Any = None,
    *,
    threads: int = 0,
) -> tuple[np.ndarray, int]:
    """The reference of engine._query.select: numpy masks, then Python's stable `sorted`.
    `sort_zones` and `threads` only make the kernel faster; the reference ignores them."""
    if n < 0 or offset < 0:
        raise ValidationError("n and offset must be >= 0")
    rows = _ref_filter(n, preds)
    ordered = rows.tolist()
    if sort is not None:
        if sort_rank is None and sort.dtype == np.int32:
            raise ValidationError("sorting by an int32 code column needs sort_rank")
        vals = _ref_values(sort, rows, n, sort_rank)
        present = [(v, r) for v, r in zip(vals, ordered, strict=True) if not math.isnan(v)]
        missing = [r for v, r in zip(vals, ordered, strict=True) if math.isnan(v)]
        ordered = [r for _, r in sorted(present, key=lambda t: t[0], reverse=descending)] + missing
    end = None if limit < 0 else offset + limit
    return np.array(ordered[offset:end], dtype=np.int64), len(rows)


def aggregate_by_reference(
    n: int, preds: Iterable[tuple[Any, ...]], group: Any, ngroups: int, value: Any = None
) -> tuple[np.ndarray, ...]:
    """The reference of engine._aggregate.aggregate_by."""
    rows = _ref_filter(n, preds)
    count, present, total = [0] * ngroups, [0] * ngroups, [0.0] * ngroups
    mn, mx = [math.nan] * ngroups, [math.nan] * ngroups
    groups = [0] * len(rows) if group is None else _ref_column(group, n)[rows].tolist()
    vals = [math.nan] * len(rows) if value is None else _ref_values(value, rows, n)
    for g, v in zip(groups, vals, strict=True):
        if not 0 <= g < ngroups:
            continue
        count[g] += 1
        if not math.isnan(v):
            present[g] += 1
            total[g] += v
            mn[g] = v if math.isnan(mn[g]) else min(mn[g], v)
            mx[g] = v if math.isnan(mx[g]) else max(mx[g], v)
    ints, floats = np.array(count, np.int64), np.array(total, np.float64)
    counted = ints.copy() if value is None else np.array(present, np.int64)
    return ints, counted, floats, np.array(mn, np.float64), np.array(mx, np.float64)


def aggregate_reference(
    n: int, preds: Iterable[tuple[Any, ...]] = (), value: Any = None, *, threads: int = 0
) -> tuple[int, int, float, float, float]:
    """The reference of engine._aggregate.aggregate."""
    r, c, s, lo, hi = aggregate_by_reference(n, preds, None, 1, value)
    return int(r[0]), int(c[0]), float(s[0]), float(lo[0]), float(hi[0])


class _Reference:
    ZONE_ROWS = ZONE_ROWS
    select = staticmethod(select_reference)
    aggregate = staticmethod(aggregate_reference)
    aggregate_by = staticmethod(aggregate_by_reference)


def _load_kernel() -> Any:
    """The native kernels under one namespace, or `_Reference` when ENGINE_PURE=1."""
    query, aggregates = _native.load("_query"), _native.load("_aggregate")
    if query is None or aggregates is None:
        return _Reference
    if query.ZONE_ROWS != ZONE_ROWS:  # pragma: no cover - a build/source mismatch
        raise ValidationError(
            f"engine._query.ZONE_ROWS={query.ZONE_ROWS} but engine.columns uses {ZONE_ROWS}"
        )
    return types.SimpleNamespace(
        ZONE_ROWS=query.ZONE_ROWS,
        select=query.select,
        aggregate=aggregates.aggregate,
        aggregate_by=aggregates.aggregate_by,
    )


kernel: Any = _load_kernel()
