# cython: language_level=3
"""What the row-scanning kernels share: engine._vectors (float32 rows) and engine._prefilter
(their int8 copy) walk the same chunks on the same threads with the same helpers.

- `dot`: one float32 row's score, accumulated in double (the full scan, the rescoring of
  prefilter candidates, and the rounding depth the prefilter's error bound must cover:
  `dot_depth`, kept beside the routine it describes).
- `offer`: a score into a thread's k-heap (`_common.heap_push`) past a cached threshold.
- `gather`, `prefetch`: a masked chunk collects its surviving rows first, then reads only
  those, a few rows of prefetch ahead.
- `skip_below`: jump over runs of scores that cannot enter a heap.
- `resolve_threads`, `heap_stride`: threads per call and per-thread heap layout.
"""

from _common cimport float32_t, heap_push, int64_t, uint8_t

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define ENGINE_PREFETCH(p) __builtin_prefetch((p))
    #else
    #define ENGINE_PREFETCH(p) ((void)(p))
    #endif
    /* One row's dot product with the query, accumulated in double. The query comes widened to
       double (once per search); each float32 of the row is widened too, and the product of two
       float32 values is exact in double, so the only roundings are the additions: 16 running
       sums (element j goes to sum j % 16; four chains of 4 lanes), folded chain-wise
       ((c0 + c1) + (c2 + c3)), then lane-wise ((l0 + l2) + (l1 + l3)), then the scalar tail
       (< 16 elements) is added. AVX: vcvtps2pd + vfmadd on ymm; SSE2: the same sums in xmm
       pairs; elsewhere plain C. All three do the same additions in the same order, and FMA or
       not gives the same result (the product is exact), so every build scores a row alike.
       ENGINE_DOT_DEPTH(dim) bounds the additions a product goes through (the prefilter's error
       bound uses it): at most dim/16 in its sum, 2 + 2 folds and the tail add; a tail product
       at most 15 tail adds and 1. */
    #define ENGINE_DOT_DEPTH(dim) ((dim) / 16 + 16)
    #if defined(__AVX__)
    #include <immintrin.h>
    #if defined(__FMA__)
    #define ENGINE_MADD4(x, y, a) _mm256_fmadd_pd((x), (y), (a))
    #else
    #define ENGINE_MADD4(x, y, a) _mm256_add_pd(_mm256_mul_pd((x), (y)), (a))
    #endif
    #define ENGINE_STEP4(a, o) \
        a = ENGINE_MADD4(_mm256_loadu_pd(q + j + (o)), _mm256_cvtps_pd(_mm_loadu_ps(r + j + (o))), a)
    static inline double engine_dot(const double *q, const float *r, Py_ssize_t dim) {
        __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
        __m128d h;
        Py_ssize_t j = 0;
        double tail = 0.0;
        for (; j + 16 <= dim; j += 16) {
            ENGINE_STEP4(a0, 0); ENGINE_STEP4(a1, 4); ENGINE_STEP4(a2, 8); ENGINE_STEP4(a3, 12);
        }
        for (; j < dim; j++) tail += q[j] * (double)r[j];
        a0 = _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3));
        h = _mm_add_pd(_mm256_castpd256_pd128(a0), _mm256_extractf128_pd(a0, 1));
        return (_mm_cvtsd_f64(h) + _mm_cvtsd_f64(_mm_unpackhi_pd(h, h))) + tail;
    }
    #elif defined(__SSE2__)
    #include <emmintrin.h>
    /* lanes 0-1 of a chain in one register, lanes 2-3 in the next */
    #define ENGINE_STEP2(lo, hi, o) do { \
            __m128 y_ = _mm_loadu_ps(r + j + (o)); \
            lo = _mm_add_pd(lo, _mm_mul_pd(_mm_loadu_pd(q + j + (o)), _mm_cvtps_pd(y_))); \
            hi = _mm_add_pd(hi, _mm_mul_pd(_mm_loadu_pd(q + j + (o) + 2), \
                                           _mm_cvtps_pd(_mm_movehl_ps(y_, y_)))); \
        } while (0)
    static inline double engine_dot(const double *q, const float *r, Py_ssize_t dim) {
        __m128d a0 = _mm_setzero_pd(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;
        Py_ssize_t j = 0;
        double tail = 0.0;
        for (; j + 16 <= dim; j += 16) {
            ENGINE_STEP2(a0, b0, 0); ENGINE_STEP2(a1, b1, 4);
            ENGINE_STEP2(a2, b2, 8); ENGINE_STEP2(a3, b3, 12);
        }
        for (; j < dim; j++) tail += q[j] * (double)r[j];
        a0 = _mm_add_pd(_mm_add_pd(a0, a1), _mm_add_pd(a2, a3));
        b0 = _mm_add_pd(_mm_add_pd(b0, b1), _mm_add_pd(b2, b3));
        a0 = _mm_add_pd(a0, b0);
        return (_mm_cvtsd_f64(a0) + _mm_cvtsd_f64(_mm_unpackhi_pd(a0, a0))) + tail;
    }
    #else
    static double engine_dot(const double *q, const float *r, Py_ssize_t dim) {
        double a[16] = {0}, s[4], tail = 0.0;
        Py_ssize_t j = 0;
        int l;
        for (; j + 16 <= dim; j += 16)
            for (l = 0; l < 16; l++) a[l] += q[j + l] * (double)r[j + l];
        for (; j < dim; j++) tail += q[j] * (double)r[j];
        for (l = 0; l < 4; l++) s[l] = (a[l] + a[l + 4]) + (a[l + 8] + a[l + 12]);
        return ((s[0] + s[2]) + (s[1] + s[3])) + tail;
    }
    #endif

    /* Where to resume a scan for scores >= t (a batch merge; the prefilter's pass 2): the
       start of the first 32-score block from j that holds one (a vectorised compare-and-OR
       per block), else the start of the tail (< 32 scores left). Most blocks hold none. */
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
    void ENGINE_PREFETCH(const void* p) noexcept nogil
    double dot "engine_dot"(const double* q, const float32_t* r, Py_ssize_t dim) noexcept nogil
    Py_ssize_t dot_depth "ENGINE_DOT_DEPTH"(Py_ssize_t dim) noexcept nogil
    Py_ssize_t skip_below "engine_skip_below"(const float32_t* s, Py_ssize_t j, Py_ssize_t n,
                                              float32_t t) noexcept nogil


cdef enum:
    PREFETCH_AHEAD = 4  # masked rows prefetched ahead of the one being scored
    # below this many float32 values (or int8 groups of 4) per thread, waking another costs more
    MIN_VALUES_PER_THREAD = 1 << 20


cdef inline Py_ssize_t resolve_threads(int threads, Py_ssize_t default, Py_ssize_t work,
                                       Py_ssize_t units) noexcept nogil:
    """Threads to use: explicit `threads` as given, else `default` capped by the work size."""
    cdef Py_ssize_t nt
    if threads > 0:
        nt = threads
    else:
        nt = min(default, max(1, work // MIN_VALUES_PER_THREAD))
    nt = min(nt, max(units, 1))
    return max(nt, 1)


cdef inline Py_ssize_t heap_stride(Py_ssize_t k) noexcept nogil:
    """Per-thread heap stride: k rounded up to a cache line, plus one line against false sharing."""
    return (k + 7) // 8 * 8 + 8


cdef inline void prefetch(const void* p, Py_ssize_t nbytes) noexcept nogil:
    """Ask for every cache line of a row that is not next in memory (a masked scan jumps)."""
    cdef const char* c = <const char*>p
    cdef Py_ssize_t j
    for j in range(0, nbytes, 64):
        ENGINE_PREFETCH(c + j)


cdef inline void offer(double* keys, int64_t* idx, Py_ssize_t* size, Py_ssize_t k,
                       double* thr, double score, int64_t row) noexcept nogil:
    """Push (score, row) unless it cannot beat the heap's worst item (`thr`)."""
    if score >= thr[0]:
        heap_push(keys, idx, size, k, score, row)
        if size[0] == k:
            thr[0] = keys[0]


cdef inline Py_ssize_t gather(const uint8_t* mask, Py_ssize_t start, Py_ssize_t stop,
                              int64_t* out) noexcept nogil:
    """The unmasked rows of [start, stop), written to `out`; returns how many."""
    cdef Py_ssize_t r, m = 0
    for r in range(start, stop):
        if mask[r]:
            out[m] = r
            m += 1
    return m
