# cython: language_level=3
"""Cosine top-k kernels over a contiguous, L2-normalised float32 matrix.

Rows are stored unit-length, so cosine similarity is a dot product and a
search is "the k largest of X @ q", found without ever holding N scores.

Single query (`topk`): one fused pass that scores a row and offers it to a
size-k heap (`_common.heap_push`; ties keep the lower row) before moving on.
- What is chunked: the rows, in chunks of `chunk_rows` (default 4096, 6 MB
  at dim 384). A chunk is the unit of work handed to a thread and, with a
  metadata mask, the unit of gathering: the chunk's surviving row numbers are
  collected from the mask first, then only those rows are read, with the
  next few prefetched, so a 10%-selective filter reads about 10% of the
  matrix and is faster than no filter.
- What is parallel: chunks, over `threads` OpenMP threads (prange, GIL
  released, dynamic schedule so a core that other processes slow down just
  takes fewer chunks). Each thread has its own heap and its own gather
  buffer; the heaps are merged at the end, so threads share nothing while
  scanning. The scan is memory-bound (1M x 384 float32 is 1.5 GB per query),
  so the second core is there for its memory bandwidth, not its FMAs.
- Inner loop (`engine_dot`, C below): one row at a time, four independent
  8-lane float32 FMA chains (GCC/Clang vector extensions: AVX2 with
  -march=native, SSE in a portable build). Rows are read front to back, one
  sequential stream per thread, which the hardware prefetcher follows at
  full speed. Measured alternatives: interleaving 4 rows to reuse each query
  load was 1.6x slower out of cache (four streams 1.5 KB apart defeat the
  prefetcher; the query sits in L1 anyway), and plain Cython lane loops
  auto-vectorised the FMAs but spilled the accumulators through the stack
  for the horizontal sum, 1.5-2x slower on rows in cache.
- Precision: float32 products accumulate in float32 SIMD lanes (each of the
  32 lanes sums dim/32 products, the four chains are folded lane-wise in
  float32) and the final 8 lanes are summed in double. That is the precision
  of BLAS sgemv, which the brute-force reference (numpy `X @ q`) and faiss
  use, so recall is that of brute force; converting every product to double
  would halve the SIMD width for no change in the top-k of unit vectors.
  Every row goes through the same routine, so a row's score, and the result,
  do not depend on `chunk_rows` or `threads` (bit for bit).

Batches (`topk_batch`): BLAS (numpy matmul, sgemm) scores a block of rows
against all queries at once (about 4 MB of scores per block), then a native
pass feeds each query's scores to that query's heap, skipping runs of 32
scores that cannot enter it with one vectorised compare, so the merge costs
next to nothing beside the sgemm. It runs on the calling thread: BLAS
already occupies the cores, and an OpenMP merge between BLAS calls was
measured 2-3x slower overall (the two thread pools spin against each
other). With a mask, each block gathers its surviving rows before the
matmul. A single query goes to the fused scan instead.
"""

cimport openmp
from cython.parallel cimport prange

from libc.math cimport INFINITY

from _common cimport (
    float32_t,
    heap_push,
    heap_sort_best_first,
    int64_t,
    uint8_t,
)

import os

import numpy as np

from engine.errors import ConfigError, DimensionError, ValidationError

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define ENGINE_PREFETCH(p) __builtin_prefetch((p))
    #else
    #define ENGINE_PREFETCH(p) ((void)(p))
    #endif
    """
    void ENGINE_PREFETCH(const void* p) noexcept nogil

cdef extern from *:
    """
    /* One row's dot product with the query: 4 x 8 float32 lanes (four independent FMA
       chains), lanes folded in float32, the last 8 summed in double. GCC/Clang vector
       extensions keep the accumulators in registers (AVX2 with -march=native, SSE in a
       portable build); other compilers get the same arithmetic in plain C. */
    #include <string.h>
    #if defined(__GNUC__) || defined(__clang__)
    typedef float engine_v8sf __attribute__((vector_size(32)));
    static inline double engine_dot(const float *q, const float *r, Py_ssize_t dim) {
        engine_v8sf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, x, y, s;
        Py_ssize_t j = 0;
        float tail = 0.0f;
        for (; j + 32 <= dim; j += 32) {
            memcpy(&x, q + j, 32); memcpy(&y, r + j, 32); a0 += x * y;
            memcpy(&x, q + j + 8, 32); memcpy(&y, r + j + 8, 32); a1 += x * y;
            memcpy(&x, q + j + 16, 32); memcpy(&y, r + j + 16, 32); a2 += x * y;
            memcpy(&x, q + j + 24, 32); memcpy(&y, r + j + 24, 32); a3 += x * y;
        }
        for (; j < dim; j++) tail += q[j] * r[j];
        s = (a0 + a1) + (a2 + a3);
        return (((double)s[0] + (double)s[4]) + ((double)s[2] + (double)s[6]))
             + (((double)s[1] + (double)s[5]) + ((double)s[3] + (double)s[7])) + (double)tail;
    }
    #else
    static double engine_dot(const float *q, const float *r, Py_ssize_t dim) {
        float a[32] = {0}, s[8];
        Py_ssize_t j = 0;
        int l;
        float tail = 0.0f;
        for (; j + 32 <= dim; j += 32)
            for (l = 0; l < 32; l++) a[l] += q[j + l] * r[j + l];
        for (; j < dim; j++) tail += q[j] * r[j];
        for (l = 0; l < 8; l++) s[l] = (a[l] + a[l + 8]) + (a[l + 16] + a[l + 24]);
        return (((double)s[0] + (double)s[4]) + ((double)s[2] + (double)s[6]))
             + (((double)s[1] + (double)s[5]) + ((double)s[3] + (double)s[7])) + (double)tail;
    }
    #endif

    /* Where to resume a batch merge: the start of the first 32-score block from j that
       holds a score >= t (a vectorised compare-and-OR per block), else the start of the
       tail (< 32 scores left). Most blocks hold nothing that can enter a heap. */
    static inline Py_ssize_t engine_skip_below(const float *s, Py_ssize_t j, Py_ssize_t n, float t) {
        int l, hit;
        for (; j + 32 <= n; j += 32) {
            hit = 0;
            for (l = 0; l < 32; l++) hit |= s[j + l] >= t;
            if (hit) return j;
        }
        return j;
    }
    """
    double _dot "engine_dot"(const float32_t* q, const float32_t* r, Py_ssize_t dim) noexcept nogil
    Py_ssize_t _skip_below "engine_skip_below"(const float32_t* s, Py_ssize_t j, Py_ssize_t n,
                                               float32_t t) noexcept nogil


cdef enum:
    PREFETCH_AHEAD = 4  # masked rows prefetched ahead of the one being scored

DEFAULT_CHUNK_ROWS = 4096
# a batch block holds about this many float32 scores (4 MB: stays in L2/L3 for the heap merge)
SCORE_BLOCK_VALUES = 1 << 20
# below this many float32 values per thread, waking another thread costs more than it saves
cdef Py_ssize_t MIN_VALUES_PER_THREAD = 1 << 20


def default_threads():
    """Threads a kernel uses when not told: ENGINE_THREADS, else os.cpu_count()."""
    raw = os.environ.get("ENGINE_THREADS", "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            raise ConfigError(f"ENGINE_THREADS must be a positive integer, got {raw!r}") from None
        if n <= 0:
            raise ConfigError(f"ENGINE_THREADS must be a positive integer, got {raw!r}")
        return n
    return os.cpu_count() or 1


cdef Py_ssize_t _resolve_threads(int threads, Py_ssize_t work, Py_ssize_t units) except -1:
    """Threads to use: explicit `threads` as given, else the default capped by the work size."""
    cdef Py_ssize_t nt
    if threads > 0:
        nt = threads
    else:
        nt = default_threads()
        nt = min(nt, max(1, work // MIN_VALUES_PER_THREAD))
    nt = min(nt, max(units, 1))
    return max(nt, 1)


cdef inline void _prefetch_row(const float32_t* r, Py_ssize_t dim) noexcept nogil:
    """Ask for every cache line of a row that is not next in memory (a masked scan jumps)."""
    cdef Py_ssize_t j
    for j in range(0, dim, 16):
        ENGINE_PREFETCH(r + j)


cdef inline void _offer(double* keys, int64_t* idx, Py_ssize_t* size, Py_ssize_t k,
                        double* thr, double score, int64_t row) noexcept nogil:
    """Push (score, row) unless it cannot beat the heap's worst item (`thr`)."""
    if score >= thr[0]:
        heap_push(keys, idx, size, k, score, row)
        if size[0] == k:
            thr[0] = keys[0]


cdef void _scan_chunk(const float32_t* X, Py_ssize_t dim, const float32_t* q, const uint8_t* mask,
                      Py_ssize_t start, Py_ssize_t stop, int64_t* cand,
                      double* keys, int64_t* idx, Py_ssize_t* size_io, Py_ssize_t k) noexcept nogil:
    """Offer every unmasked row in [start, stop) to one thread's k-heap (which may hold items)."""
    cdef Py_ssize_t size = size_io[0]
    cdef double thr = keys[0] if size == k else -INFINITY
    cdef Py_ssize_t r, m, i
    if mask == NULL:
        for r in range(start, stop):
            _offer(keys, idx, &size, k, &thr, _dot(q, X + r * dim, dim), r)
    else:
        # gather the chunk's surviving rows, then score them with a few rows of prefetch in flight
        m = 0
        for r in range(start, stop):
            if mask[r]:
                cand[m] = r
                m += 1
        for i in range(min(m, PREFETCH_AHEAD)):
            _prefetch_row(X + cand[i] * dim, dim)
        for i in range(m):
            if i + PREFETCH_AHEAD < m:
                _prefetch_row(X + cand[i + PREFETCH_AHEAD] * dim, dim)
            _offer(keys, idx, &size, k, &thr, _dot(q, X + cand[i] * dim, dim), cand[i])
    size_io[0] = size


cdef inline Py_ssize_t _pad(Py_ssize_t k) noexcept nogil:
    """Per-thread heap stride: k rounded up to a cache line, plus one line against false sharing."""
    return (k + 7) // 8 * 8 + 8


def topk(const float32_t[:, ::1] X, const float32_t[::1] q, Py_ssize_t k,
         const uint8_t[::1] mask=None, *, int threads=0, Py_ssize_t chunk_rows=0):
    """Rows of X with the k largest dot products with q, best first.

    X: (n, dim) float32, C-contiguous; q: (dim,) float32; mask: optional (n,)
    uint8, nonzero = row may be returned. threads <= 0: default_threads(),
    capped so each thread has enough work; chunk_rows <= 0: the default.
    Returns (rows int64, scores float64), at most k long (fewer when fewer
    rows pass the mask). Ties keep the lower row.
    """
    cdef Py_ssize_t n = X.shape[0], dim = X.shape[1]
    if q.shape[0] != dim:
        raise DimensionError(f"query has dimension {q.shape[0]}, the matrix has {dim}")
    if k <= 0:
        raise ValidationError(f"k must be positive, got {k}")
    if mask is not None and mask.shape[0] != n:
        raise ValidationError(f"mask has {mask.shape[0]} entries for {n} rows")
    if chunk_rows <= 0:
        chunk_rows = DEFAULT_CHUNK_ROWS
    if n == 0 or dim == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    chunk_rows = min(chunk_rows, n)
    cdef Py_ssize_t kk = min(k, n)
    cdef Py_ssize_t nchunks = (n + chunk_rows - 1) // chunk_rows
    cdef Py_ssize_t nt = _resolve_threads(threads, n * dim, nchunks)
    cdef Py_ssize_t stride = _pad(kk)
    cdef double[::1] keys = np.empty(nt * stride, np.float64)
    cdef int64_t[::1] idx = np.empty(nt * stride, np.int64)
    cdef Py_ssize_t[::1] sizes = np.zeros(nt, np.intp)
    cdef int64_t[::1] cand = np.empty(nt * chunk_rows if mask is not None else 1, np.int64)
    cdef int64_t* cp = &cand[0]  # per-thread gather buffers (only touched with a mask)
    cdef const uint8_t* mp = NULL
    if mask is not None:
        mp = &mask[0]
    cdef const float32_t* xp = &X[0, 0]
    cdef const float32_t* qp = &q[0]
    cdef Py_ssize_t c, t, lo
    with nogil:
        if nt == 1:
            for c in range(nchunks):
                lo = c * chunk_rows
                _scan_chunk(xp, dim, qp, mp, lo, min(lo + chunk_rows, n), cp,
                            &keys[0], &idx[0], &sizes[0], kk)
        else:
            for c in prange(nchunks, num_threads=nt, schedule="dynamic"):
                t = openmp.omp_get_thread_num()
                lo = c * chunk_rows
                _scan_chunk(xp, dim, qp, mp, lo, min(lo + chunk_rows, n), cp + t * chunk_rows,
                            &keys[t * stride], &idx[t * stride], &sizes[t], kk)
    return _merge_heaps(keys, idx, sizes, stride, kk)


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


cdef void _offer_block(const float32_t* s, Py_ssize_t b, const int64_t* rows, int64_t row0,
                       double* keys, int64_t* idx, Py_ssize_t* size_io, Py_ssize_t k) noexcept nogil:
    """Offer one query's scores for a block of rows to that query's k-heap."""
    cdef Py_ssize_t size = size_io[0], j = 0, end
    cdef double thr = keys[0] if size == k else -INFINITY
    while j < b:
        # heap keys are float32 scores, so comparing in float32 is exact
        j = _skip_below(s, j, b, <float32_t>thr)
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
    gather = None if rows_all is None else np.empty((min(block_rows, live), dim), np.float32)
    for b0 in range(0, live, block_rows):
        b = min(block_rows, live - b0)
        S = scores if b == scores.shape[1] else np.empty((nq, b), np.float32)
        if rows_all is None:
            np.matmul(Q, X[b0:b0 + b].T, out=S)
        else:
            rv = rows_all[b0:b0 + b]
            rp = &rv[0]
            np.matmul(Q, np.take(X, rows_all[b0:b0 + b], axis=0, out=gather[:b]).T, out=S)
        Sv = S
        with nogil:
            for qi in range(nq):
                _offer_block(&Sv[qi, 0], b, rp, b0, &keys[qi, 0], &idx[qi, 0], &sizes[qi], kk)
    with nogil:
        for qi in range(nq):
            heap_sort_best_first(&keys[qi, 0], &idx[qi, 0], sizes[qi])
    return idx_arr, keys_arr
