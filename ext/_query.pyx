# cython: language_level=3
"""Count + page + top-k over a stream's typed columns: `select`, in one pass through the filter.

Design note. A query is a conjunction of predicates on typed numpy columns
(engine/columns.py), an optional sort column and an offset/limit page. `select`
answers it in one pass over the rows, GIL released, chunk by chunk (CHUNK rows):
engine._filter (ext/_filter.pyx) hands over each chunk's survivors (dense
byte-mask filter, narrow companions, zone maps: see its note), and this module
counts them and keeps the page.
- Count + page: every chunk adds its survivors to total_count. Without a sort
  the page is the first offset+limit survivors; after that, chunks are only
  counted (the mask's bytes summed, no compaction).
- Sort: survivors go to the stable size-k heap of _common.pxd ("better" =
  higher key, ties to the lower row; ascending sorts negate the key). Python's
  `sorted(..., reverse=True)` is stable too (equal keys keep their order; it
  does not reverse them), so in both directions the page equals
  `sorted(filtered rows in offset order, key=..., reverse=desc)[off:off+lim]`.
  Missing sort values never compete: a second heap keeps them after all
  present values, in offset order (NULLS LAST). The heap's content does not
  depend on the order rows are offered, so it is first filled from the end
  where the best keys probably are (the last chunks when the key grows, as a
  timestamp does newest-first; else the first). Once it is full, a block
  whose zone-map best is worse than the heap's root can only be counted. The
  total count needs every row anyway, so there is no early exit: with zone
  maps the heap costs next to nothing beside the count (measured: the seed
  query takes as long as its count alone), and a "timestamps are sorted" flag
  would save nothing more, so engine.columns keeps none. The sort column is
  read in full (never its narrow companion); int64 sort keys compare as
  float64 (exact up to 2**53).
- Threads: once the heap is full (or with no sort, once the page is), the
  remaining chunks can be split over OpenMP threads (prange, dynamic schedule,
  a few chunks per claim). Each thread keeps its own heap of the rows that
  beat the full heap's root (the floor) and prunes blocks against it; the
  heaps are merged into the main one at the end. Since heap content is
  order-independent and ties go to the lower row, the page is identical for
  every thread count. The default is one thread (engine._filter's note says
  why; ENGINE_THREADS overrides, `threads=` per call).
"""

cimport numpy as cnp
cimport openmp
from cython.parallel cimport prange
from libc.math cimport INFINITY, NAN, isnan
from libc.stdint cimport INT64_MAX
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from _common cimport heap_better, heap_push, heap_sort_best_first, int64_t
from engine._filter cimport (
    CHUNK,
    K_CODE,
    K_F64,
    Key,
    Pred,
    column,
    count_chunks,
    grab,
    kind_of,
    parse_preds,
    parse_zones,
    resolve_threads,
    row_key,
    select_chunk,
)

cdef extern from *:
    """
    #if defined(_MSC_VER)
    #include <xmmintrin.h>
    #define engine_prefetch(p) _mm_prefetch((const char*)(p), _MM_HINT_T0)
    #else
    #define engine_prefetch(p) __builtin_prefetch(p)
    #endif
    """
    void engine_prefetch(const void* p) noexcept nogil

import numpy as np

from engine import _filter
from engine.errors import ValidationError

cnp.import_array()

cdef enum:
    SIZE_STRIDE = 8    # per-thread heap sizes a cache line apart

ZONE_ROWS = CHUNK  # rows per zone-map block
PAR_ROWS = _filter.PAR_ROWS  # the thread policy is the filter's, shared with engine._aggregate
default_threads = _filter.default_threads


# ---------------------------------------------------------------------------- the sort key

cdef int _parse_key(object sort, bint descending, object sort_rank, object zones, Py_ssize_t n,
                    Key* k, list keep) except -1:
    cdef cnp.ndarray col = column(sort, n, keep)
    cdef cnp.ndarray rank
    memset(k, 0, sizeof(Key))
    k.kind = kind_of(col)
    k.data = cnp.PyArray_DATA(col)
    k.width = col.dtype.itemsize
    k.desc = descending
    if k.kind == K_F64:
        parse_zones(zones, n, &k.zmin, &k.zmax, keep)
    elif k.kind == K_CODE:
        if sort_rank is None:
            raise ValidationError("sorting by an int32 code column needs sort_rank (the key of each code)")
        raw = np.asarray(sort_rank, dtype=np.float64).ravel()
        rank = np.full(raw.shape[0] + 2, NAN)
        rank[1:raw.shape[0] + 1] = raw
        keep.append(rank)
        k.rank = <const double*> cnp.PyArray_DATA(rank)
        k.last = raw.shape[0] + 1
    return 0


# ---------------------------------------------------------------------------- the scans

cdef Py_ssize_t _scan_page(const Pred* preds, Py_ssize_t npreds, Py_ssize_t n, int64_t* page,
                           Py_ssize_t cap, Py_ssize_t* kept, int nt) noexcept nogil:
    """No sort: the first `cap` matching rows in offset order; returns total matches.

    The page fills from the first chunks on this thread; the chunks after it are only counted, split
    over nt threads.
    """
    cdef int64_t sel[CHUNK]
    cdef Py_ssize_t c = 0, nchunks = (n + CHUNK - 1) // CHUNK, m, j, total = 0, got = 0
    while c < nchunks and got < cap:
        m = select_chunk(preds, npreds, c * CHUNK, min(c * CHUNK + CHUNK, n), sel, &total)
        for j in range(min(m, cap - got)):
            page[got + j] = sel[j]
        got += min(m, cap - got)
        c += 1
    kept[0] = got
    return total + count_chunks(preds, npreds, n, c, nchunks, nt)


cdef Py_ssize_t _heap_chunk(const Pred* preds, Py_ssize_t npreds, Py_ssize_t n, const Key* key,
                            Py_ssize_t c, double* hk, int64_t* hi, Py_ssize_t* hsize,
                            double* mk, int64_t* mi, Py_ssize_t* msize, Py_ssize_t cap,
                            double fk, int64_t fi) noexcept nogil:
    """Offer chunk c's matching rows to the heaps; returns how many rows matched.

    Only rows better than the floor (fk, fi) enter (hk, hi) (fk = -inf, fi = INT64_MAX: no floor);
    rows with a missing key go to (mk, mi) unless mk is NULL.
    """
    cdef int64_t sel[CHUNK]
    cdef Py_ssize_t m, j, total = 0
    cdef double g, best
    cdef bint admit = cap > 0
    if admit and key.zmin != NULL:
        # the block's best possible key is worse than what the heap (or the floor) already beats:
        # only count its matches
        best = key.zmax[c] if key.desc else -key.zmin[c]
        admit = not (best < (hk[0] if hsize[0] == cap else fk))
    m = select_chunk(preds, npreds, c * CHUNK, min(c * CHUNK + CHUNK, n), sel if admit else NULL, &total)
    for j in range(m):  # the survivors' sort values are scattered: ask for all their cache lines at once
        engine_prefetch(<const char*> key.data + sel[j] * key.width)
    for j in range(m):
        g = row_key(key, sel[j])
        if isnan(g):
            if mk != NULL:
                heap_push(mk, mi, msize, cap, 0.0, sel[j])
        elif heap_better(g, sel[j], fk, fi):
            heap_push(hk, hi, hsize, cap, g, sel[j])
    return total


cdef Py_ssize_t _heap_chunks(const Pred* preds, Py_ssize_t npreds, Py_ssize_t n, const Key* key,
                             Py_ssize_t c0, Py_ssize_t c1, int nt, double* hk, int64_t* hi,
                             Py_ssize_t* hsize, Py_ssize_t cap, double* lk, int64_t* li,
                             Py_ssize_t* lsize, Py_ssize_t lcap, Py_ssize_t stride) noexcept nogil:
    """Chunks [c0, c1) once the heap (hk, hi) is full (or cap is 0), over nt threads.

    Each thread keeps the rows that beat the full heap's root in its own heap (lk, li) +
    t * stride of lcap rows (lsize[t * SIZE_STRIDE] items); they are merged into (hk, hi) at the
    end. The heap's content does not depend on the order rows are offered, so the page is the
    same for every split. Missing keys cannot reach the page any more and are not kept.
    """
    cdef Py_ssize_t c, i, t, total = 0
    cdef double fk = -INFINITY
    cdef int64_t fi = INT64_MAX
    if cap == 0 or c0 >= c1:
        return count_chunks(preds, npreds, n, c0, c1, nt)
    if nt <= 1:
        for c in range(c0, c1):
            total += _heap_chunk(preds, npreds, n, key, c, hk, hi, hsize, NULL, NULL, NULL, cap, fk, fi)
        return total
    cdef Py_ssize_t claim = grab(c1 - c0, nt)
    fk, fi = hk[0], hi[0]
    for c in prange(c0, c1, num_threads=nt, schedule="dynamic", chunksize=claim):
        t = openmp.omp_get_thread_num()
        total += _heap_chunk(preds, npreds, n, key, c, lk + t * stride, li + t * stride,
                             &lsize[t * SIZE_STRIDE], NULL, NULL, NULL, lcap, fk, fi)
    for t in range(nt):
        for i in range(lsize[t * SIZE_STRIDE]):
            heap_push(hk, hi, hsize, cap, lk[t * stride + i], li[t * stride + i])
    return total


cdef Py_ssize_t _seed_heap(const Pred* preds, Py_ssize_t npreds, Py_ssize_t n, const Key* key,
                           bint backward, double* hk, int64_t* hi, Py_ssize_t* hsize,
                           double* mk, int64_t* mi, Py_ssize_t* msize, Py_ssize_t cap,
                           Py_ssize_t* lo, Py_ssize_t* hi_c) noexcept nogil:
    """Sort, first part: fill the heap from the end where the best keys probably are (the last chunks
    when `backward`, else the first) until it holds `cap` rows; returns the matches seen and leaves
    the chunks not yet scanned in [lo, hi_c). Rows with a missing key meanwhile go to (mk, mi) in
    offset order (they come after every present key, so once the heap is full they are moot).
    """
    cdef Py_ssize_t total = 0
    lo[0], hi_c[0] = 0, (n + CHUNK - 1) // CHUNK
    if cap == 0:
        return 0
    if backward:
        while hi_c[0] > lo[0] and hsize[0] < cap:
            hi_c[0] -= 1
            total += _heap_chunk(preds, npreds, n, key, hi_c[0], hk, hi, hsize, mk, mi, msize, cap,
                                 -INFINITY, INT64_MAX)
    else:
        while lo[0] < hi_c[0] and hsize[0] < cap:
            total += _heap_chunk(preds, npreds, n, key, lo[0], hk, hi, hsize, mk, mi, msize, cap,
                                 -INFINITY, INT64_MAX)
            lo[0] += 1
    return total


# ---------------------------------------------------------------------------- entry point

def select(Py_ssize_t n, preds=(), sort=None, bint descending=False, sort_rank=None,
           Py_ssize_t offset=0, Py_ssize_t limit=-1, sort_zones=None, *, int threads=0):
    """Filter rows [0, n) by `preds`, optionally sort, and return (page row indices, total_count).

    preds: tuples, all of which must hold:
      ("eq", col, value[, narrow])
                              code/bool column: that code; float/int column: == value; None: missing
      ("in", col, codes[, narrow])
                              int32 code or uint8/bool column; -1 in codes matches missing
      ("range", col, lo, hi[, zones[, narrow]])
                              float64/int64 column, inclusive, None = open; a NaN bound matches nothing.
                              zones (float64): (block min, block max) per ZONE_ROWS rows, NaN skipped,
                              +inf/-inf for an all-missing block; blocks they rule out are skipped
      ("missing", col)        NaN / INT64_MIN / code < 0 / bool byte > 1
    narrow (or None): for an int32 code column its int8 copy (equal values), for a float64 column
    its float32 sketch (`col.astype(np.float32)`); the dense filter reads it instead of the column.
    It must hold exactly those values (like zones, it is trusted); the answer does not change.
    sort: float64, int64, uint8/bool, or int32 codes keyed by `sort_rank[code]`. Missing values come
    last in both directions; equal keys keep offset order. sort_zones: the sort column's zone map.
    limit < 0: no limit. threads <= 0: default_threads(), capped so each thread scans at least
    PAR_ROWS rows; the answer is the same for every thread count.
    Returns a new int64 array of row indices and the number of matching rows.
    """
    if n < 0 or offset < 0:
        raise ValidationError(f"n and offset must be >= 0, got n={n}, offset={offset}")
    cdef list keep = []
    cdef Py_ssize_t npreds = 0, total = 0, kept = 0, hsize = 0, msize = 0, lcap = 0, stride = 0
    cdef Py_ssize_t cap = n if limit < 0 else min(n, offset + limit)
    cdef Py_ssize_t i, size
    cdef Key key
    cdef bint backward = False
    cdef Py_ssize_t lo = 0, hi_c = 0
    cdef int nt = 1
    cdef Pred* p = parse_preds(preds, n, &npreds, keep)
    cdef void* scratch = NULL
    cdef void* local = NULL
    cdef double* hk
    cdef double* mk
    cdef double* lk = NULL
    cdef int64_t* hi
    cdef int64_t* mi
    cdef int64_t* li = NULL
    cdef Py_ssize_t* lsize = NULL
    cdef int64_t* out
    cdef cnp.ndarray page
    try:
        if sort is not None:
            _parse_key(sort, descending, sort_rank, sort_zones, n, &key, keep)
        if n == 0:
            return np.empty(0, np.int64), 0
        if sort is None:
            page = np.empty(cap, np.int64)
            nt = resolve_threads(threads, n)
            with nogil:
                total = _scan_page(p, npreds, n, <int64_t*> cnp.PyArray_DATA(page), cap, &kept, nt)
            return (page if offset == 0 and kept == cap else page[offset:kept].copy()), total
        backward = row_key(&key, n - 1) > row_key(&key, 0)
        scratch = malloc(4 * max(cap, 1) * 8)  # the page heap and the missing-key heap
        if scratch == NULL:
            raise MemoryError()
        hk = <double*> scratch
        hi = <int64_t*> (hk + cap)
        mk = <double*> (hi + cap)
        mi = <int64_t*> (mk + cap)
        with nogil:
            total = _seed_heap(p, npreds, n, &key, backward, hk, hi, &hsize, mk, mi, &msize, cap, &lo, &hi_c)
        nt = resolve_threads(threads, (hi_c - lo) * CHUNK)
        if nt > 1 and cap > 0:  # a heap per thread, of at most cap rows (or the rows left)
            lcap = min(cap, (hi_c - lo) * CHUNK)
            stride = (lcap + 7) // 8 * 8 + 8  # a cache line apart, against false sharing
            local = malloc(2 * nt * stride * 8 + nt * SIZE_STRIDE * sizeof(Py_ssize_t))
            if local == NULL:
                raise MemoryError()
            lk = <double*> local
            li = <int64_t*> (lk + nt * stride)
            lsize = <Py_ssize_t*> (li + nt * stride)
            memset(lsize, 0, nt * SIZE_STRIDE * sizeof(Py_ssize_t))
        with nogil:
            total += _heap_chunks(p, npreds, n, &key, lo, hi_c, nt, hk, hi, &hsize, cap,
                                  lk, li, lsize, lcap, stride)
            heap_sort_best_first(hk, hi, hsize)
            heap_sort_best_first(mk, mi, msize)
        msize = min(msize, cap - hsize)
        size = max(0, hsize + msize - offset)
        page = np.empty(size, np.int64)
        out = <int64_t*> cnp.PyArray_DATA(page)
        for i in range(offset, hsize + msize):
            out[i - offset] = hi[i] if i < hsize else mi[i - hsize]
        return page, total
    finally:
        free(local)
        free(scratch)
        free(p)
