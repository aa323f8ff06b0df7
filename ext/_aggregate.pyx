# cython: language_level=3
"""Aggregates over a stream's typed columns: (rows, count, sum, min, max), overall or per group code.

Design note. `aggregate` / `aggregate_by` run the same filter as `select`
(engine._filter: predicates, narrow companions, zone maps) and fold each
chunk's survivors into (rows, count, sum, min, max) of a value column, overall
or per group code (int32 dictionary codes or uint8/bool). Sums run in double,
in row order, on one thread, so they do not depend on a thread split; a plain
count (no value column) only needs the chunks' popcounts and splits over
threads like `select`. A value column is read in full (float64, int64 or
uint8/bool, missing values skipped); int64 values are summed as float64
(exact up to 2**53).
"""

cimport numpy as cnp
from libc.math cimport INFINITY, NAN, isnan
from libc.stdlib cimport free
from libc.string cimport memset

from _common cimport int32_t, int64_t, uint8_t
from engine._filter cimport (
    CHUNK,
    K_CODE,
    K_U8,
    Key,
    Pred,
    column,
    count_chunks,
    kind_of,
    parse_preds,
    resolve_threads,
    row_key,
    select_chunk,
)

import numpy as np

from engine.errors import ValidationError

cnp.import_array()


cdef void _fold(const Pred* p, Py_ssize_t npreds, Py_ssize_t n, int vkind, const void* vdata,
                int gkind, const void* gdata, Py_ssize_t ngroups, int64_t* rows, int64_t* cnt,
                double* sm, double* mn, double* mx) noexcept nogil:
    cdef int64_t sel[CHUNK]
    cdef Py_ssize_t start = 0, m, j, g, total = 0
    cdef int64_t i
    cdef Key value
    cdef double v
    if gkind < 0 and vkind < 0:  # a plain count: no row numbers needed
        rows[0] = count_chunks(p, npreds, n, 0, (n + CHUNK - 1) // CHUNK, 1)
        return
    memset(&value, 0, sizeof(Key))
    value.kind, value.data, value.desc = vkind, vdata, True
    while start < n:
        m = select_chunk(p, npreds, start, min(start + CHUNK, n), sel, &total)
        for j in range(m):
            i = sel[j]
            if gkind < 0:
                g = 0
            elif gkind == K_CODE:
                g = (<const int32_t*> gdata)[i]
            else:
                g = (<const uint8_t*> gdata)[i]
            if g < 0 or g >= ngroups:
                continue
            rows[g] += 1
            if vkind < 0:
                continue
            v = row_key(&value, i)
            if isnan(v):
                continue
            cnt[g] += 1
            sm[g] += v
            mn[g] = v if v < mn[g] else mn[g]
            mx[g] = v if v > mx[g] else mx[g]
        start += CHUNK


cdef Py_ssize_t _count(Py_ssize_t n, object preds, int threads) except -1:
    """Rows of [0, n) matching `preds`: the chunks' counts, split over threads."""
    if n < 0:
        raise ValidationError(f"n must be >= 0, got n={n}")
    cdef list keep = []
    cdef Py_ssize_t npreds = 0, total = 0
    cdef int nt = resolve_threads(threads, n)
    cdef Pred* p = parse_preds(preds, n, &npreds, keep)
    try:
        with nogil:
            total = count_chunks(p, npreds, n, 0, (n + CHUNK - 1) // CHUNK, nt)
        return total
    finally:
        free(p)


cdef tuple _aggregate(Py_ssize_t n, object preds, object value, object group, Py_ssize_t ngroups):
    if n < 0 or ngroups < 0:
        raise ValidationError(f"n and ngroups must be >= 0, got n={n}, ngroups={ngroups}")
    cdef list keep = []
    cdef Py_ssize_t npreds = 0, size = max(ngroups, 1)
    cdef int vkind = -1, gkind = -1
    cdef const void* vdata = NULL
    cdef const void* gdata = NULL
    cdef cnp.ndarray col, rows, cnt, sm, mn, mx
    cdef Pred* p = parse_preds(preds, n, &npreds, keep)
    try:
        if value is not None:
            col = column(value, n, keep)
            vkind, vdata = kind_of(col), cnp.PyArray_DATA(col)
            if vkind == K_CODE:
                raise ValidationError("cannot aggregate an int32 code column: group by it instead")
        if group is not None:
            col = column(group, n, keep)
            gkind, gdata = kind_of(col), cnp.PyArray_DATA(col)
            if gkind != K_CODE and gkind != K_U8:
                raise ValidationError("the group column must be int32 codes or uint8/bool")
        rows, cnt = np.zeros(size, np.int64), np.zeros(size, np.int64)
        sm, mn, mx = np.zeros(size), np.full(size, INFINITY), np.full(size, -INFINITY)
        with nogil:
            _fold(p, npreds, n, vkind, vdata, gkind, gdata, ngroups,
                  <int64_t*> cnp.PyArray_DATA(rows), <int64_t*> cnp.PyArray_DATA(cnt),
                  <double*> cnp.PyArray_DATA(sm), <double*> cnp.PyArray_DATA(mn),
                  <double*> cnp.PyArray_DATA(mx))
        mn[cnt == 0] = NAN
        mx[cnt == 0] = NAN
        if vkind < 0:
            cnt[:] = rows
        return rows[:ngroups], cnt[:ngroups], sm[:ngroups], mn[:ngroups], mx[:ngroups]
    finally:
        free(p)


def aggregate(Py_ssize_t n, preds=(), value=None, *, int threads=0):
    """(rows, count, sum, min, max) over rows [0, n) matching `preds` (as in engine._query.select).

    rows counts the matching rows; count/sum/min/max cover their non-missing `value`s (a float64,
    int64 or uint8/bool column); min/max are NaN when count is 0. Without a value column count = rows,
    and the count is split over `threads` as in engine._query.select; sums run on one thread, in row order.
    """
    if value is None:
        rows = _count(n, preds, threads)
        return rows, rows, 0.0, NAN, NAN
    r, c, s, lo, hi = _aggregate(n, preds, value, None, 1)
    return int(r[0]), int(c[0]), float(s[0]), float(lo[0]), float(hi[0])


def aggregate_by(Py_ssize_t n, preds, group, Py_ssize_t ngroups, value=None):
    """Like `aggregate`, per group code 0..ngroups-1 of `group` (int32 codes or uint8/bool).

    Returns five arrays of length ngroups (rows, count: int64; sum, min, max: float64). Rows whose
    group code is missing or outside [0, ngroups) are not counted anywhere.
    """
    return _aggregate(n, preds, value, group, ngroups)
