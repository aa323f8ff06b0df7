# cython: language_level=3
"""Cosine top-k kernels over a contiguous, L2-normalised float32 matrix.

Rows are stored unit-length, so cosine similarity is a dot product and a
search is "the k largest of X @ q", found without ever holding N scores.

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
  do not depend on `chunk_rows`, `threads` or the path taken (bit for bit).

Prefilter (`candidates`, then `topk(rows=...)`): the full scan cannot beat
bandwidth / 1.5 GB, so a single query first reads a quarter of the bytes.
Beside X the index keeps an int8 copy, per row r: a scale s_r = max|x_r|/127
(float32), codes c_r = round(x_r / s_r) in [-127, 127], and two bounds
(`quantise`, float64 arithmetic rounded up to float32): en_r >= ||x_r - s_r c_r||
and cn_r >= s_r ||c_r||. Memory: dim + 12 bytes per row, +26% at dim 384.
- The query is quantised the same way: t = max|q|/127, d = round(q / t),
  f = q - t d. A_r = s_r t (c_r . d) is an exact int32 dot product (at most
  dim * 127^2) scaled once. Since x = s c + e and q = t d + f,
  q.x - A = q.e + s (f.c), and Cauchy-Schwarz gives
  |q.x_r - A_r| <= ||q|| en_r + ||f|| cn_r. (The per-component bound
  s (||q||_1 / 2 + t/2 sum|c|) holds too but is 1.4x wider on Gaussian data
  and gave twice the candidates.) The score we must bracket is the float32
  kernel's S_r, not q.x_r: |S_r - q.x_r| <= gamma_m sum|q_i x_i| <=
  gamma_m ||q|| (en_r + cn_r), with gamma_m = m u / (1 - m u), u = 2^-24,
  m = dim/32 + 35 (the longest chain of roundings a product goes through:
  the lane FMA chain plus two folds, or the scalar tail of up to 31 adds).
  The bound is evaluated in double: A, the bound, q and f's norms each
  carry a few 2^-53 relative errors, covered by doubling gamma_m; so
  err_r = ||q|| en_r + ||f|| cn_r + rel (||q|| + ||f||)(en_r + cn_r) + 1e-30,
  rel = 2 gamma_m + 2^-40 (5.6e-6 at dim 384), the 1e-30 for float32
  underflow. Hence L_r = A_r - err_r <= S_r <= A_r + err_r = U_r, with U_r
  rounded up when stored as float32.
- Pass 1 (parallel exactly like the full scan: chunks, mask gathering,
  per-thread heaps): int8 dot products (`engine_dot_i8`: AVX2 pmaddubsw on
  |d| and sign(c, d), then pmaddwd into int32 lanes; a plain loop elsewhere),
  A_r and err_r; U_r goes to a float32 scratch array (4 MB per 1M rows,
  -inf for masked rows) and L_r to a per-thread k-heap. theta = the k-th
  largest L over all threads.
- Pass 2: candidates = rows with U_r >= theta (a vectorised scan of the
  scratch array). There are k rows with L >= theta, hence k rows with
  S >= theta, so every row scoring at least the k-th best S has
  U >= S >= theta: the candidates hold the top-k and every row tied with
  it. `topk(rows=candidates)` rescores them with `engine_dot`, so scores
  and the tie rule are those of the full scan, bit for bit.
- When the bound cannot narrow the search (more than `max_candidates`
  qualify, by default 2% of the rows or 1024: near-duplicate data with many
  near-ties, or fewer than k eligible rows), `candidates` returns None and
  the caller runs the full scan. On the benchmark's 1M random unit vectors
  at dim 384, k = 10, about 80 rows qualify (err_r ~ 0.014 against a top-10
  score ~ 0.2); with a 10% filter about 110. Measured there: 20 ms against
  65 ms for the full scan (pass 1 moves 384 + 12 + 4 MB; one core reads
  ~13 GB/s, both ~20 GB/s), 9 ms against 17 ms with the 10% filter.

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

from libc.float cimport FLT_EPSILON
from libc.math cimport INFINITY, fabs, ldexp, nearbyint, nextafterf, sqrt
from libc.stdint cimport int8_t, int32_t

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

    /* A row's int8 codes dotted with the quantised query d, exactly, in int32. The query comes
       twice: |d| (uint8) and d. AVX2: pmaddubsw(|d|, sign(c, d)) = pairs of d*c in int16 (at
       most 2 * 127^2, no saturation since codes avoid -128), pmaddwd by 1 widens to int32;
       twice 32 bytes per step into two accumulators. Without AVX2 a plain loop that the
       compiler vectorises for the target (SSE2: widen, pmullw, add); under -march=native that
       loop was measured 1.8x slower per row than the AVX2 path, which is memory-bound. */
    #include <stdint.h>
    #if defined(__AVX2__)
    #include <immintrin.h>
    static inline int32_t engine_dot_i8(const uint8_t *qa, const int8_t *qs, const int8_t *r,
                                        Py_ssize_t dim) {
        const __m256i ones = _mm256_set1_epi16(1);
        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256(), c, p;
        __m128i h;
        Py_ssize_t j = 0;
        int32_t s;
        for (; j + 64 <= dim; j += 64) {
            c = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(r + j)),
                                 _mm256_loadu_si256((const __m256i *)(qs + j)));
            p = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(qa + j)), c);
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(p, ones));
            c = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(r + j + 32)),
                                 _mm256_loadu_si256((const __m256i *)(qs + j + 32)));
            p = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(qa + j + 32)), c);
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(p, ones));
        }
        if (j + 32 <= dim) {
            c = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(r + j)),
                                 _mm256_loadu_si256((const __m256i *)(qs + j)));
            p = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(qa + j)), c);
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(p, ones));
            j += 32;
        }
        a0 = _mm256_add_epi32(a0, a1);
        h = _mm_add_epi32(_mm256_castsi256_si128(a0), _mm256_extracti128_si256(a0, 1));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
        s = _mm_cvtsi128_si32(h);
        for (; j < dim; j++) s += (int32_t)qs[j] * r[j];
        return s;
    }
    #else
    static inline int32_t engine_dot_i8(const uint8_t *qa, const int8_t *qs, const int8_t *r,
                                        Py_ssize_t dim) {
        int32_t s = 0;
        Py_ssize_t j;
        (void)qa;
        for (j = 0; j < dim; j++) s += (int16_t)qs[j] * (int16_t)r[j];
        return s;
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
    int32_t _dot_i8 "engine_dot_i8"(const uint8_t* qa, const int8_t* qs, const int8_t* r,
                                    Py_ssize_t dim) noexcept nogil
    Py_ssize_t _skip_below "engine_skip_below"(const float32_t* s, Py_ssize_t j, Py_ssize_t n,
                                               float32_t t) noexcept nogil


cdef enum:
    PREFETCH_AHEAD = 4  # masked rows prefetched ahead of the one being scored
    STATS = 3  # per-row quantisation stats: scale, error norm bound, code norm bound

DEFAULT_CHUNK_ROWS = 4096
# a batch block holds about this many float32 scores (4 MB: stays in L2/L3 for the heap merge)
SCORE_BLOCK_VALUES = 1 << 20
# `candidates` gives up (None: run the full scan) beyond max(rows // 50, this many) candidates
MIN_CANDIDATE_LIMIT = 1024
# below this many float32 values per thread, waking another thread costs more than it saves
cdef Py_ssize_t MIN_VALUES_PER_THREAD = 1 << 20
cdef double TINY = 1e-30  # covers float32 underflow in the scores a bound brackets
# os.cpu_count() reads sysfs (~13 us): once per process, not once per search or add
cdef Py_ssize_t CPUS = os.cpu_count() or 1


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
    return CPUS


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


cdef inline void _prefetch(const void* p, Py_ssize_t nbytes) noexcept nogil:
    """Ask for every cache line of a row that is not next in memory (a masked scan jumps)."""
    cdef const char* c = <const char*>p
    cdef Py_ssize_t j
    for j in range(0, nbytes, 64):
        ENGINE_PREFETCH(c + j)


cdef inline void _offer(double* keys, int64_t* idx, Py_ssize_t* size, Py_ssize_t k,
                        double* thr, double score, int64_t row) noexcept nogil:
    """Push (score, row) unless it cannot beat the heap's worst item (`thr`)."""
    if score >= thr[0]:
        heap_push(keys, idx, size, k, score, row)
        if size[0] == k:
            thr[0] = keys[0]


cdef Py_ssize_t _gather(const uint8_t* mask, Py_ssize_t start, Py_ssize_t stop,
                        int64_t* out) noexcept nogil:
    """The unmasked rows of [start, stop), written to `out`; returns how many."""
    cdef Py_ssize_t r, m = 0
    for r in range(start, stop):
        if mask[r]:
            out[m] = r
            m += 1
    return m


cdef void _scan_rows(const float32_t* X, Py_ssize_t dim, const float32_t* q, const int64_t* rows,
                     Py_ssize_t m, double* keys, int64_t* idx, Py_ssize_t* size_io,
                     Py_ssize_t k) noexcept nogil:
    """Offer the listed rows to one thread's k-heap, a few rows of prefetch in flight."""
    cdef Py_ssize_t size = size_io[0], i
    cdef double thr = keys[0] if size == k else -INFINITY
    for i in range(min(m, PREFETCH_AHEAD)):
        _prefetch(X + rows[i] * dim, dim * 4)
    for i in range(m):
        if i + PREFETCH_AHEAD < m:
            _prefetch(X + rows[i + PREFETCH_AHEAD] * dim, dim * 4)
        _offer(keys, idx, &size, k, &thr, _dot(q, X + rows[i] * dim, dim), rows[i])
    size_io[0] = size


cdef void _scan_chunk(const float32_t* X, Py_ssize_t dim, const float32_t* q, const uint8_t* mask,
                      Py_ssize_t start, Py_ssize_t stop, int64_t* cand,
                      double* keys, int64_t* idx, Py_ssize_t* size_io, Py_ssize_t k) noexcept nogil:
    """Offer every unmasked row in [start, stop) to one thread's k-heap (which may hold items)."""
    cdef Py_ssize_t size = size_io[0], r
    cdef double thr = keys[0] if size == k else -INFINITY
    if mask == NULL:
        for r in range(start, stop):
            _offer(keys, idx, &size, k, &thr, _dot(q, X + r * dim, dim), r)
        size_io[0] = size
    else:
        _scan_rows(X, dim, q, cand, _gather(mask, start, stop, cand), keys, idx, size_io, k)


cdef inline Py_ssize_t _pad(Py_ssize_t k) noexcept nogil:
    """Per-thread heap stride: k rounded up to a cache line, plus one line against false sharing."""
    return (k + 7) // 8 * 8 + 8


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
    cdef Py_ssize_t nt = _resolve_threads(threads, items * dim, nchunks)
    cdef Py_ssize_t stride = _pad(kk)
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
    cdef const float32_t* qp = &q[0]
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


cdef inline void _scan_part(const float32_t* X, Py_ssize_t dim, const float32_t* q, const uint8_t* mask,
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


# -- the int8 prefilter ----------------------------------------------------------------------------


cdef inline float32_t _up(double v) noexcept nogil:
    """v as a float32 >= v: raised by more than half a float32 ulp, then rounded to nearest.

    Branch-free (nextafterf is a libm call, and this runs once per row).
    """
    return <float32_t>(v + fabs(v) * FLT_EPSILON + TINY)


cdef inline double _norm_growth(Py_ssize_t dim) noexcept nogil:
    """Relative inflation covering the double rounding of a norm over `dim` terms."""
    return 1.0 + (dim + 8) * ldexp(1.0, -52)


cdef void _quantise_row(const float32_t* x, Py_ssize_t dim, int8_t* c,
                        float32_t* st) noexcept nogil:
    """Codes of one row and its stats: scale s, en >= ||x - s c||, cn >= s ||c||."""
    cdef double amax = 0.0, inv = 0.0, e
    cdef double e0 = 0.0, e1 = 0.0, e2 = 0.0, e3 = 0.0, c0 = 0.0, c1 = 0.0, c2 = 0.0, c3 = 0.0
    cdef float32_t s
    cdef Py_ssize_t j
    for j in range(dim):
        amax = max(amax, fabs(x[j]))
    s = <float32_t>(amax / 127.0)
    if amax > 0:
        inv = 127.0 / amax
    for j in range(dim):
        c[j] = <int8_t>min(max(nearbyint(x[j] * inv), -127.0), 127.0)
    # four partial sums (four dependency chains); s * c is exact in double, so each error
    # x - s c takes one rounding and each c^2 none
    j = 0
    while j + 4 <= dim:
        e = x[j] - <double>s * c[j]
        e0 += e * e
        e = x[j + 1] - <double>s * c[j + 1]
        e1 += e * e
        e = x[j + 2] - <double>s * c[j + 2]
        e2 += e * e
        e = x[j + 3] - <double>s * c[j + 3]
        e3 += e * e
        c0 += <double>c[j] * c[j]
        c1 += <double>c[j + 1] * c[j + 1]
        c2 += <double>c[j + 2] * c[j + 2]
        c3 += <double>c[j + 3] * c[j + 3]
        j += 4
    while j < dim:
        e = x[j] - <double>s * c[j]
        e0 += e * e
        c0 += <double>c[j] * c[j]
        j += 1
    st[0] = s
    st[1] = _up(sqrt((e0 + e1) + (e2 + e3)) * _norm_growth(dim))
    st[2] = _up(s * sqrt((c0 + c1) + (c2 + c3)) * _norm_growth(dim))


def quantise(const float32_t[:, ::1] X, int8_t[:, ::1] codes, float32_t[:, ::1] stats, *,
             int threads=0):
    """Fill the int8 copy of X: codes (n, dim) int8 and stats (n, 3) float32.

    Per row: codes = round(x * 127 / max|x|) and stats = (scale s as float32,
    an upper bound of ||x - s codes||, an upper bound of s ||codes||), what
    `candidates` needs to bracket every score. `reference_quantise` in
    engine.vectors computes the same codes and scales with numpy.
    """
    cdef Py_ssize_t n = X.shape[0], dim = X.shape[1], r
    if codes.shape[0] != n or codes.shape[1] != dim:
        raise DimensionError(f"codes have shape {(codes.shape[0], codes.shape[1])}, the matrix {(n, dim)}")
    if stats.shape[0] != n or stats.shape[1] != STATS:
        raise DimensionError(f"stats have shape {(stats.shape[0], stats.shape[1])}, expected {(n, STATS)}")
    if n == 0:
        return
    cdef Py_ssize_t nt = _resolve_threads(threads, n * dim * 4, n)
    with nogil:
        if nt == 1:
            for r in range(n):
                _quantise_row(&X[r, 0], dim, &codes[r, 0], &stats[r, 0])
        else:
            for r in prange(n, num_threads=nt, schedule="static"):
                _quantise_row(&X[r, 0], dim, &codes[r, 0], &stats[r, 0])


cdef inline double _bracket(const int8_t* C, const float32_t* st, Py_ssize_t dim, const uint8_t* qa,
                            const int8_t* qs, const double* w, Py_ssize_t r,
                            double* lower) noexcept nogil:
    """Bounds of row r's float32 score: returns the upper one, writes the lower one.

    w = (t, alpha, beta): A = s t (c . d), err = alpha en + beta cn + TINY.
    """
    cdef const float32_t* s = st + r * STATS
    cdef double a = (s[0] * w[0]) * _dot_i8(qa, qs, C + r * dim, dim)
    cdef double err = w[1] * s[1] + w[2] * s[2] + TINY
    lower[0] = a - err
    return a + err


cdef inline void _bound_row(const int8_t* C, const float32_t* st, Py_ssize_t dim, const uint8_t* qa,
                            const int8_t* qs, const double* w, Py_ssize_t r, float32_t* upper,
                            double* keys, int64_t* idx, Py_ssize_t* size, Py_ssize_t k,
                            double* thr) noexcept nogil:
    """Pass 1 for row r: its upper bound to `upper[r]`, its lower bound offered to the k-heap."""
    cdef double lo
    upper[r] = _up(_bracket(C, st, dim, qa, qs, w, r, &lo))
    _offer(keys, idx, size, k, thr, lo, r)


cdef void _bound_chunk(const int8_t* C, const float32_t* st, Py_ssize_t dim, const uint8_t* qa,
                       const int8_t* qs, const double* w, const uint8_t* mask, Py_ssize_t start,
                       Py_ssize_t stop, int64_t* cand, float32_t* upper, double* keys, int64_t* idx,
                       Py_ssize_t* size_io, Py_ssize_t k) noexcept nogil:
    """Pass 1 over the rows [start, stop): masked rows get upper bound -inf and no heap offer."""
    cdef Py_ssize_t size = size_io[0], r, m, i
    cdef double thr = keys[0] if size == k else -INFINITY
    if mask == NULL:
        for r in range(start, stop):
            _bound_row(C, st, dim, qa, qs, w, r, upper, keys, idx, &size, k, &thr)
    else:
        for r in range(start, stop):
            upper[r] = -INFINITY
        m = _gather(mask, start, stop, cand)
        for i in range(min(m, PREFETCH_AHEAD)):
            _prefetch(C + cand[i] * dim, dim)
        for i in range(m):
            if i + PREFETCH_AHEAD < m:
                _prefetch(C + cand[i + PREFETCH_AHEAD] * dim, dim)
                ENGINE_PREFETCH(st + cand[i + PREFETCH_AHEAD] * STATS)
            _bound_row(C, st, dim, qa, qs, w, cand[i], upper, keys, idx, &size, k, &thr)
    size_io[0] = size


cdef tuple _quantise_query(const float32_t[::1] q):
    """|d| (uint8), d (int8) and w = (t, alpha, beta) for `_bound_row` (see the module note)."""
    cdef Py_ssize_t dim = q.shape[0], j, m = dim // 32 + 35
    qa_arr = np.empty(dim, np.uint8)
    qs_arr = np.empty(dim, np.int8)
    w_arr = np.empty(3, np.float64)
    cdef uint8_t[::1] qa = qa_arr
    cdef int8_t[::1] qs = qs_arr
    cdef double[::1] w = w_arr
    cdef double amax = 0.0, t, inv = 0.0, v, f, qq = 0.0, ff = 0.0, q2, f2, rel
    cdef double u = ldexp(1.0, -24)  # float32 unit roundoff
    for j in range(dim):
        amax = max(amax, fabs(q[j]))
    t = amax / 127.0
    if amax > 0:
        inv = 127.0 / amax
    for j in range(dim):
        v = min(max(nearbyint(q[j] * inv), -127.0), 127.0)
        qs[j] = <int8_t>v
        qa[j] = <uint8_t>fabs(v)
        f = q[j] - t * v
        qq += <double>q[j] * q[j]
        ff += f * f
    q2 = sqrt(qq)
    f2 = sqrt(ff)
    if not (q2 < INFINITY):
        raise ValidationError("the query contains NaN or infinity")
    rel = 2.0 * (m * u / (1.0 - m * u)) + ldexp(1.0, -40)
    w[0] = t
    w[1] = q2 + rel * (q2 + f2)
    w[2] = f2 + rel * (q2 + f2)
    return qa_arr, qs_arr, w_arr


def score_bounds(const int8_t[:, ::1] codes, const float32_t[:, ::1] stats, const float32_t[::1] q):
    """(lower float64, upper float32) bounds of every row's float32 score with q, as pass 1 has them.

    The score is the one `topk` computes; the tests check lower <= score <= upper.
    """
    cdef Py_ssize_t n = codes.shape[0], dim = codes.shape[1], r
    if q.shape[0] != dim or stats.shape[0] != n or stats.shape[1] != STATS:
        raise DimensionError(
            f"codes {(n, dim)}, stats {(stats.shape[0], stats.shape[1])}, query {q.shape[0]}")
    lower_arr = np.empty(n, np.float64)
    upper_arr = np.empty(n, np.float32)
    if n == 0:
        return lower_arr, upper_arr
    qa_arr, qs_arr, w_arr = _quantise_query(q)
    cdef const uint8_t[::1] qa = qa_arr
    cdef const int8_t[::1] qs = qs_arr
    cdef const double[::1] w = w_arr
    cdef double[::1] lower = lower_arr
    cdef float32_t[::1] upper = upper_arr
    with nogil:
        for r in range(n):
            upper[r] = _up(_bracket(&codes[0, 0], &stats[0, 0], dim, &qa[0], &qs[0], &w[0], r, &lower[r]))
    return lower_arr, upper_arr


def candidates(const int8_t[:, ::1] codes, const float32_t[:, ::1] stats, const float32_t[::1] q,
               Py_ssize_t k, const uint8_t[::1] mask=None, *, int threads=0, Py_ssize_t chunk_rows=0,
               Py_ssize_t max_candidates=0):
    """Rows that may be in the top-k of q, from the int8 copy (`quantise`), or None.

    Returns the ascending int64 rows whose upper score bound reaches the
    k-th largest lower bound: a superset of the exact top-k and of every row
    tied with it, to be rescored with `topk(X, q, k, rows=...)`. Returns None
    when that set would exceed `max_candidates` (<= 0: max(rows // 50,
    MIN_CANDIDATE_LIMIT)) or fewer than k rows pass the mask: the caller
    runs the full scan. Chunks, threads and mask as in `topk`.
    """
    cdef Py_ssize_t n = codes.shape[0], dim = codes.shape[1]
    if q.shape[0] != dim:
        raise DimensionError(f"query has dimension {q.shape[0]}, the codes have {dim}")
    if stats.shape[0] != n or stats.shape[1] != STATS:
        raise DimensionError(f"stats have shape {(stats.shape[0], stats.shape[1])}, expected {(n, STATS)}")
    if k <= 0:
        raise ValidationError(f"k must be positive, got {k}")
    if mask is not None and mask.shape[0] != n:
        raise ValidationError(f"mask has {mask.shape[0]} entries for {n} rows")
    if chunk_rows <= 0:
        chunk_rows = DEFAULT_CHUNK_ROWS
    if max_candidates <= 0:
        max_candidates = max(n // 50, MIN_CANDIDATE_LIMIT)
    if n == 0 or dim == 0 or k > n:
        return None
    qa_arr, qs_arr, w_arr = _quantise_query(q)
    cdef const uint8_t[::1] qa = qa_arr
    cdef const int8_t[::1] qs = qs_arr
    cdef const double[::1] w = w_arr
    chunk_rows = min(chunk_rows, n)
    cdef Py_ssize_t nchunks = (n + chunk_rows - 1) // chunk_rows
    cdef Py_ssize_t nt = _resolve_threads(threads, n * dim // 4, nchunks)
    cdef Py_ssize_t stride = _pad(k)
    cdef double[::1] keys = np.empty(nt * stride, np.float64)
    cdef int64_t[::1] idx = np.empty(nt * stride, np.int64)
    cdef Py_ssize_t[::1] sizes = np.zeros(nt, np.intp)
    cdef float32_t[::1] upper = np.empty(n, np.float32)
    cdef int64_t[::1] cand = np.empty(nt * chunk_rows if mask is not None else 1, np.int64)
    cdef const uint8_t* mp = NULL
    if mask is not None:
        mp = &mask[0]
    cdef Py_ssize_t c, t, lo, size = 0, i, j, found = 0
    cdef double theta
    cdef float32_t theta32
    cdef const int8_t* cp = &codes[0, 0]
    cdef const float32_t* sp = &stats[0, 0]
    cdef int64_t* gp = &cand[0]  # per-thread gather buffers (only touched with a mask)
    with nogil:
        if nt == 1:
            for c in range(nchunks):
                lo = c * chunk_rows
                _bound_chunk(cp, sp, dim, &qa[0], &qs[0], &w[0], mp, lo, min(lo + chunk_rows, n), gp,
                             &upper[0], &keys[0], &idx[0], &sizes[0], k)
        else:
            for c in prange(nchunks, num_threads=nt, schedule="dynamic"):
                t = openmp.omp_get_thread_num()
                lo = c * chunk_rows
                _bound_chunk(cp, sp, dim, &qa[0], &qs[0], &w[0], mp, lo, min(lo + chunk_rows, n),
                             gp + (t * chunk_rows if mp != NULL else 0), &upper[0],
                             &keys[t * stride], &idx[t * stride], &sizes[t], k)
        # theta: the k-th largest lower bound of all threads (only its value matters)
        for t in range(1, nt):
            for i in range(sizes[t]):
                heap_push(&keys[0], &idx[0], &sizes[0], k, keys[t * stride + i], idx[t * stride + i])
        size = sizes[0]
    if size < k:
        return None  # fewer than k rows pass the mask: the answer is all of them
    theta = keys[0]
    theta32 = <float32_t>theta
    if theta32 > theta:  # round down, so the float32 compare keeps every row >= theta
        theta32 = nextafterf(theta32, -INFINITY)
    out_arr = np.empty(max_candidates, np.int64)
    cdef int64_t[::1] out = out_arr
    with nogil:
        j = 0
        while j < n and found <= max_candidates:
            j = _skip_below(&upper[0], j, n, theta32)
            for i in range(j, min(j + 32, n)):
                if upper[i] >= theta32:
                    if found == max_candidates:
                        found += 1
                        break
                    out[found] = i
                    found += 1
            j += 32
    if found > max_candidates:
        return None
    return out_arr[:found]


# -- batches ---------------------------------------------------------------------------------------


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
