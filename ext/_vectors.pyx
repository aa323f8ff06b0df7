# cython: language_level=3
"""Cosine top-k kernels over a contiguous, L2-normalised float32 matrix.

Rows are stored unit-length, so cosine similarity is a dot product and a
search is "the k largest of X @ q", found without ever holding N scores.
The int8 prefilter that narrows a single search lives in engine._prefilter
(ext/_prefilter.pyx); it hands its candidates to `topk(rows=...)`.

Full scan (`topk`): one fused pass that scores a row and offers it to a
size-k heap (`_common.heap_push`; ties keep the lower row) before moving on.
- What is chunked: the rows, in chunks of `chunk_rows` (default 4096, 6 MB
  at dim 384). A chunk is the unit of work handed to a thread and, with a
  metadata mask, the unit of gathering: the chunk's surviving row numbers are
  collected from the mask first, then only those rows are read, with the
  next few prefetched, so a 10%-selective filter reads about 10% of the
  matrix. `rows=` scores an explicit ascending row list the same way.
- What is parallel: chunks, over `threads` OpenMP threads (prange, GIL
  released, dynamic schedule so a core that other processes slow down just
  takes fewer chunks). Each thread has its own heap and its own gather
  buffer; the heaps are merged at the end, so threads share nothing while
  scanning. The scan is memory-bound (1M x 384 float32 is 1.5 GB per query),
  so the second core is there for its memory bandwidth more than its FMAs.
- Inner loop (`dot`, C in ext/_scan.pxd): one row at a time, 16 double
  running sums in four independent chains (AVX: four ymm registers, a
  vcvtps2pd and a vfmadd per 4 values; SSE2 in a portable build: the same
  sums in xmm pairs). The query is widened to double once per search and
  stays in L1. Rows are read front to back, one sequential stream per
  thread, which the hardware prefetcher follows at full speed. Measured on
  the float32 kernel this one replaced: interleaving 4 rows to reuse each
  query load was 1.6x slower out of cache (four streams 1.5 KB apart defeat
  the prefetcher), and plain Cython lane loops spilled the accumulators
  through the stack. Measured on this one: 8 chains, or widening a float32
  query in every row, were no faster in cache (the conversions, not the
  FMA latency, set the pace); GCC's generic vector conversion split each
  vcvtps2pd in two, hence the intrinsics.
- Precision (issue #3, STYLE: float32 products accumulated in double): the
  product of two float32 values is exact in double, so a score's only
  roundings are its double additions, at most dim/16 + 16 per product
  (`dot_depth`): |score - q.x| <= gamma_m sum|q_i x_i|, u = 2^-53, about
  4.4e-15 relative at dim 384 where float32 lanes gave 3e-6. The AVX, SSE2 and
  plain C versions make the same additions in the same order (with or
  without FMA: the products are exact), so every build scores a row alike,
  and every row goes through that one routine: a row's score, and the
  result, do not depend on `chunk_rows`, `threads` or the path taken (full
  scan, or the prefilter's rescoring), bit for bit. Cost: a conversion per
  4 values makes a row in cache ~1.5x slower than float32 lanes (66 against
  44 ns at dim 384); out of cache the memory traffic hides most of it:
  1M x 384 measured 151 against 124 ms on 1 thread (1.2x) and 77-84 against
  64-72 ms on 2 (1.05-1.2x), old and new kernel alternating in one process.
  A single search rescores ~80 rows this way, which costs nothing visible.

Batches (`topk_batch`): BLAS (numpy matmul, sgemm) scores a block of rows
against all queries at once (about 4 MB of scores per block), then a native
pass feeds each query's scores to that query's heap, skipping runs of 32
scores that cannot enter it with one vectorised compare, so the merge costs
next to nothing beside the sgemm. It runs on the calling thread: BLAS
already occupies the cores, and an OpenMP merge between BLAS calls was
measured 2-3x slower overall (the two thread pools spin against each
other). With a mask, each block gathers its surviving rows before the
matmul. A single query goes to the fused scan instead.
- Precision: sgemm accumulates in float32, as issue #3 routes batches
  through BLAS; a batch's scores match a single search's to ~1e-7, and rows
  tied that closely may come back in another order. dgemm on a float64 copy
  of each block measured 2.6x the sgemm time (64 queries), so batches stay
  float32.
"""

cimport openmp
from cython.parallel cimport prange

from libc.math cimport INFINITY

from _common cimport float32_t, heap_push, heap_sort_best_first, int64_t, uint8_t
from _scan cimport (
    PREFETCH_AHEAD,
    dot,
    gather,
    heap_stride,
    offer,
    prefetch,
    resolve_threads,
    skip_below,
)

import os

import numpy as np

from engine._native import env_threads
from engine.errors import DimensionError, ValidationError

DEFAULT_CHUNK_ROWS = 4096
# a batch block holds about this many float32 scores (4 MB: stays in L2/L3 for the heap merge)
SCORE_BLOCK_VALUES = 1 << 20
# os.cpu_count() reads sysfs (~13 us): once per process, not once per search or add
cdef Py_ssize_t CPUS = os.cpu_count() or 1


def default_threads():
    """Threads a kernel uses when not told: ENGINE_THREADS, else os.cpu_count()."""
    n = env_threads()
    return CPUS if n is None else n


cdef Py_ssize_t _threads(int threads, Py_ssize_t work, Py_ssize_t units) except -1:
    """Threads for `work` float32 values in `units` chunks (`threads` <= 0: the default, capped)."""
    return resolve_threads(threads, default_threads() if threads <= 0 else 1, work, units)


cdef void _scan_rows(const float32_t* X, Py_ssize_t dim, const double* q, const int64_t* rows,
                     Py_ssize_t m, double* keys, int64_t* idx, Py_ssize_t* size_io,
                     Py_ssize_t k) noexcept nogil:
    """Offer the listed rows to one thread's k-heap, a few rows of prefetch in flight."""
    cdef Py_ssize_t size = size_io[0], i
    cdef double thr = keys[0] if size == k else -INFINITY
    for i in range(min(m, PREFETCH_AHEAD)):
        prefetch(X + rows[i] * dim, dim * 4)
    for i in range(m):
        if i + PREFETCH_AHEAD < m:
            prefetch(X + rows[i + PREFETCH_AHEAD] * dim, dim * 4)
        offer(keys, idx, &size, k, &thr, dot(q, X + rows[i] * dim, dim), rows[i])
    size_io[0] = size


cdef void _scan_chunk(const float32_t* X, Py_ssize_t dim, const double* q, const uint8_t* mask,
                      Py_ssize_t start, Py_ssize_t stop, int64_t* cand,
                      double* keys, int64_t* idx, Py_ssize_t* size_io, Py_ssize_t k) noexcept nogil:
    """Offer every unmasked row in [start, stop) to one thread's k-heap (which may hold items)."""
    cdef Py_ssize_t size = size_io[0], r
    cdef double thr = keys[0] if size == k else -INFINITY
    if mask == NULL:
        for r in range(start, stop):
            offer(keys, idx, &size, k, &thr, dot(q, X + r * dim, dim), r)
        size_io[0] = size
    else:
        _scan_rows(X, dim, q, cand, gather(mask, start, stop, cand), keys, idx, size_io, k)


def topk(const float32_t[:, ::1] X, const float32_t[::1] q, Py_ssize_t k,
         const uint8_t[::1] mask=None, *, const int64_t[::1] rows=None, int threads=0,
         Py_ssize_t chunk_rows=0):
    """Rows of X with the k largest dot products with q, best first.

    X: (n, dim) float32, C-contiguous; q: (dim,) float32; mask: optional (n,)
    uint8, nonzero = row may be returned; rows: optional int64 row numbers
    (distinct, each < n), the only rows scored (instead of a mask).
    threads <= 0: default_threads(), capped so each thread has enough work;
    chunk_rows <= 0: the default. Returns (rows int64, scores float64), at
    most k long (fewer when fewer rows pass). Ties keep the lower row.
    """
    cdef Py_ssize_t n = X.shape[0], dim = X.shape[1], i
    if q.shape[0] != dim:
        raise DimensionError(f"query has dimension {q.shape[0]}, the matrix has {dim}")
    if k <= 0:
        raise ValidationError(f"k must be positive, got {k}")
    if mask is not None and mask.shape[0] != n:
        raise ValidationError(f"mask has {mask.shape[0]} entries for {n} rows")
    if mask is not None and rows is not None:
        raise ValidationError("give a mask or a row list, not both")
    cdef Py_ssize_t items = n if rows is None else rows.shape[0]
    if rows is not None:
        for i in range(items):
            if rows[i] < 0 or rows[i] >= n:
                raise ValidationError(f"row {rows[i]} is out of range for {n} rows")
    if chunk_rows <= 0:
        chunk_rows = DEFAULT_CHUNK_ROWS
    if items == 0 or dim == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    chunk_rows = min(chunk_rows, items)
    cdef Py_ssize_t kk = min(k, items)
    cdef Py_ssize_t nchunks = (items + chunk_rows - 1) // chunk_rows
    cdef Py_ssize_t nt = _threads(threads, items * dim, nchunks)
    cdef Py_ssize_t stride = heap_stride(kk)
    cdef double[::1] keys = np.empty(nt * stride, np.float64)
    cdef int64_t[::1] idx = np.empty(nt * stride, np.int64)
    cdef Py_ssize_t[::1] sizes = np.zeros(nt, np.intp)
    cdef int64_t[::1] cand = np.empty(nt * chunk_rows if mask is not None else 1, np.int64)
    cdef int64_t* cp = &cand[0]  # per-thread gather buffers (only touched with a mask)
    cdef const int64_t* rp = NULL
    if rows is not None:
        rp = &rows[0]
    cdef const uint8_t* mp = NULL
    if mask is not None:
        mp = &mask[0]
    cdef const float32_t* xp = &X[0, 0]
    cdef double[::1] qd = np.empty(dim, np.float64)  # the query widened once, not once per row
    for i in range(dim):
        qd[i] = q[i]
    cdef const double* qp = &qd[0]
    cdef Py_ssize_t c, t
    with nogil:
        if nt == 1:
            for c in range(nchunks):
                _scan_part(xp, dim, qp, mp, rp, c * chunk_rows, min((c + 1) * chunk_rows, items), cp,
                           &keys[0], &idx[0], &sizes[0], kk)
        else:
            for c in prange(nchunks, num_threads=nt, schedule="dynamic"):
                t = openmp.omp_get_thread_num()
                _scan_part(xp, dim, qp, mp, rp, c * chunk_rows, min((c + 1) * chunk_rows, items),
                           cp + t * chunk_rows, &keys[t * stride], &idx[t * stride], &sizes[t], kk)
    return _merge_heaps(keys, idx, sizes, stride, kk)


cdef inline void _scan_part(const float32_t* X, Py_ssize_t dim, const double* q, const uint8_t* mask,
                            const int64_t* rows, Py_ssize_t lo, Py_ssize_t hi, int64_t* cand,
                            double* keys, int64_t* idx, Py_ssize_t* size_io, Py_ssize_t k) noexcept nogil:
    """One chunk of `topk`: items [lo, hi) are rows, or positions in `rows` when it is given."""
    if rows != NULL:
        _scan_rows(X, dim, q, rows + lo, hi - lo, keys, idx, size_io, k)
    else:
        _scan_chunk(X, dim, q, mask, lo, hi, cand, keys, idx, size_io, k)


cdef tuple _merge_heaps(double[::1] keys, int64_t[::1] idx, Py_ssize_t[::1] sizes,
                        Py_ssize_t stride, Py_ssize_t k):
    """Merge per-thread heaps into one sorted top-k."""
    out_keys = np.empty(k, np.float64)
    out_idx = np.empty(k, np.int64)
    cdef double[::1] ok = out_keys
    cdef int64_t[::1] oi = out_idx
    cdef Py_ssize_t size = 0, t, i
    with nogil:
        for t in range(sizes.shape[0]):
            for i in range(sizes[t]):
                heap_push(&ok[0], &oi[0], &size, k, keys[t * stride + i], idx[t * stride + i])
        heap_sort_best_first(&ok[0], &oi[0], size)
    return out_idx[:size], out_keys[:size]


# -- batches ---------------------------------------------------------------------------------------


cdef void _offer_block(const float32_t* s, Py_ssize_t b, const int64_t* rows, int64_t row0,
                       double* keys, int64_t* idx, Py_ssize_t* size_io, Py_ssize_t k) noexcept nogil:
    """Offer one query's scores for a block of rows to that query's k-heap."""
    cdef Py_ssize_t size = size_io[0], j = 0, end
    cdef double thr = keys[0] if size == k else -INFINITY
    while j < b:
        # heap keys are float32 scores, so comparing in float32 is exact
        j = skip_below(s, j, b, <float32_t>thr)
        end = min(j + 32, b)
        while j < end:
            if s[j] >= thr:
                heap_push(keys, idx, &size, k, s[j], rows[j] if rows != NULL else row0 + j)
                if size == k:
                    thr = keys[0]
            j += 1
    size_io[0] = size


def topk_batch(X, Q, Py_ssize_t k, const uint8_t[::1] mask=None, *, int threads=0,
               Py_ssize_t block_rows=0):
    """Top-k rows of X for each row of Q: (rows (nq, k') int64, scores (nq, k') float64).

    X: (n, dim) float32 C-contiguous ndarray; Q: (nq, dim) float32 C-contiguous
    ndarray; mask as in `topk`. k' = min(k, rows passing the mask). Scores
    come from BLAS sgemm on blocks of `block_rows` rows (default: enough rows
    for about 4 MB of scores); each query's heap is fed natively on the
    calling thread while BLAS uses its own threads. A single query takes the
    fused `topk` scan instead, with `threads` threads.
    """
    cdef const float32_t[:, ::1] Xv = X
    cdef const float32_t[:, ::1] Qv = Q
    cdef Py_ssize_t n = Xv.shape[0], dim = Xv.shape[1], nq = Qv.shape[0]
    if Qv.shape[1] != dim:
        raise DimensionError(f"queries have dimension {Qv.shape[1]}, the matrix has {dim}")
    if k <= 0:
        raise ValidationError(f"k must be positive, got {k}")
    if mask is not None and mask.shape[0] != n:
        raise ValidationError(f"mask has {mask.shape[0]} entries for {n} rows")
    if block_rows <= 0:
        block_rows = min(max(SCORE_BLOCK_VALUES // max(nq, 1), 1024), 65536)
    rows_all = None if mask is None else np.flatnonzero(np.asarray(mask)).astype(np.int64)
    cdef Py_ssize_t live = n if rows_all is None else len(rows_all)
    cdef Py_ssize_t kk = min(k, live)
    if kk == 0 or nq == 0 or dim == 0:
        return np.empty((nq, 0), np.int64), np.empty((nq, 0), np.float64)
    if nq == 1:
        rows1, scores1 = topk(Xv, Qv[0], kk, mask, threads=threads)
        return rows1[None, :], scores1[None, :]
    keys_arr = np.empty((nq, kk), np.float64)
    idx_arr = np.empty((nq, kk), np.int64)
    cdef double[:, ::1] keys = keys_arr
    cdef int64_t[:, ::1] idx = idx_arr
    cdef Py_ssize_t[::1] sizes = np.zeros(nq, np.intp)
    cdef const int64_t* rp = NULL
    cdef const int64_t[::1] rv
    cdef const float32_t[:, ::1] Sv
    cdef Py_ssize_t b0, b, qi
    scores = np.empty((nq, min(block_rows, live)), np.float32)
    picked = None if rows_all is None else np.empty((min(block_rows, live), dim), np.float32)
    for b0 in range(0, live, block_rows):
        b = min(block_rows, live - b0)
        S = scores if b == scores.shape[1] else np.empty((nq, b), np.float32)
        if rows_all is None:
            np.matmul(Q, X[b0:b0 + b].T, out=S)
        else:
            rv = rows_all[b0:b0 + b]
            rp = &rv[0]
            np.matmul(Q, np.take(X, rows_all[b0:b0 + b], axis=0, out=picked[:b]).T, out=S)
        Sv = S
        with nogil:
            for qi in range(nq):
                _offer_block(&Sv[qi, 0], b, rp, b0, &keys[qi, 0], &idx[qi, 0], &sizes[qi], kk)
    with nogil:
        for qi in range(nq):
            heap_sort_best_first(&keys[qi, 0], &idx[qi, 0], sizes[qi])
    return idx_arr, keys_arr
