# cython: language_level=3
"""The int8 prefilter of a single search: the rows that can reach the top k, from a quarter of the bytes.

The full scan (engine._vectors `topk`) cannot beat bandwidth / 1.5 GB at
1M x 384, so a single query first reads an int8 copy of the matrix, brackets
every row's score there, and hands the few rows whose bracket reaches the
top k to `topk(rows=...)`, which rescores them with the full scan's own
routine (`dot`, ext/_scan.pxd): same scores, same tie rule, bit for bit.

The copy (`quantise`): per row r a scale s_r = max|x_r|/127 (float32), codes
c_r = round(x_r / s_r) in [-127, 127], and two bounds computed in double,
inflated for their rounding and rounded up to float32 by `_up`, which always
adds a relative slack of at least 2^-25 (it raises v by 2^-23 |v| + 1e-30
before rounding to the nearest float32, a normal one thanks to the 1e-30):
en_r >= (1 + 2^-25) ||x_r - s_r c_r|| and cn_r >= (1 + 2^-25) s_r ||c_r||.
Memory: dim + 12 bytes per row, +26% at dim 384.

The bracket. The query is quantised alike: t = max|q|/127 (double),
d = round(q / t), f = q - t d. A_r = s_r t (c_r . d), with c_r . d an
exact int32 dot product (|c.d| <= dim 127^2 < 2^31 up to MAX_DIM = 2^17;
wider vectors are not prefiltered). Since x = s c + e and q = t d + f,
q.x - A = q.e + s (f.c), and Cauchy-Schwarz gives
|q.x_r - A_r| <= ||q|| ||e_r|| + ||f|| s_r ||c_r||. (The per-component
bound s (||q||_1 / 2 + t/2 sum|c|) holds too but is 1.4x wider on Gaussian
data and gave twice the candidates.) The score to bracket is the kernel's
S_r, not q.x_r: `dot` forms each product of float32 values exactly in double
and puts it through at most m = dot_depth(dim) = dim/16 + 16 double
additions, so |S_r - q.x_r| <= gamma_m sum|q_i x_i| <= gamma_m ||q|| ||x_r||,
gamma_n = n u / (1 - n u), u = 2^-53. With q2 and f2 the norms of q and f as
evaluated in double,
    err_r = q2 en_r + f2 cn_r + rel (q2 + f2)(en_r + cn_r),  rel = gamma_{m+16}
(6.2e-15 at dim 384), L_r = A_r - err_r and U_r = A_r + err_r rounded up to
float32 by `_up`; then L_r <= S_r <= U_r. Why rel = gamma_{m+16} is enough
(every gamma below is at most gamma_{2^17+16} < 2^-35):
- the kernel: gamma_m ||q|| ||x_r|| <= gamma_{m+1} q2 (en_r + cn_r), since
  ||x|| <= ||e|| + ||s c|| and q2 >= ||q|| (1 - gamma_{dim+1}) (squares of
  float32 values are exact in double: dim additions and a sqrt);
- the norms and err itself: q2 and f2 fall short of ||q|| and of the norm
  of f as computed by at most gamma_{dim+2} relative, and err's evaluation
  loses at most gamma_7; both are far inside the 2^-25 slack of en and cn,
  which absorbs them in the terms q2 en and f2 cn;
- f as computed: |f^_j - f_j| <= u |f_j| + u (1 + u) t |d_j| and
  ||t d|| <= ||q|| + ||f||, so the norm of f can exceed the computed one by
  2u (||q|| + ||f||) more: at most gamma_3 (q2 + f2) cn;
- A_r as computed: two roundings (s t, then times c.d) of
  |A| <= ||t d|| ||s c|| <= (||q|| + ||f||) cn: gamma_3 (q2 + f2) cn;
- L_r = A_r - err_r is rounded once more: u |A_r| <= gamma_2 (q2 + f2) cn,
  plus u err_r (inside the slack again); U_r is rounded up.
That is m + 1 + 3 + 3 + 2 = m + 9 units in rel's place; m + 16 leaves room
for rel's own rounding. No term for underflow: in double, products of
float32 values (>= 2^-298), s t, the squares and everything else here stay
far above the underflow threshold, and a sum that underflows is exact.
The tests break each term: a query along e (q2 en), a query error along the
codes (f2 cn), and rows whose additions round one way at dim 4096 (the
kernel's gamma_m: its error alone is many times the rest of rel).

Pass 1 (`candidates`; parallel exactly like the full scan: chunks, mask
gathering, per-thread heaps): int8 dot products (`engine_dot_i8`: AVX2
pmaddubsw on |d| and sign(c, d), then pmaddwd into int32 lanes; a plain loop
elsewhere), A_r and err_r; U_r goes to a float32 scratch array (4 MB per 1M
rows, -inf for masked rows) and L_r to a per-thread k-heap. theta = the k-th
largest L over all threads.

Pass 2: candidates = rows with U_r >= theta (a vectorised scan of the
scratch array). There are k rows with L >= theta, hence k rows with
S >= theta, so every row scoring at least the k-th best S has U >= S >= theta:
the candidates hold the top-k and every row tied with it.

When the bound cannot narrow the search (more than `max_candidates` qualify,
by default 2% of the rows or 1024: near-duplicate data with many near-ties;
fewer than k eligible rows; dim > MAX_DIM), `candidates` returns None and
the caller runs the full scan. On the benchmark's 1M random unit vectors at
dim 384, k = 10, about 80 rows qualify (err_r ~ 0.014 against a top-10 score
~ 0.2); with a 10% filter about 110. Measured there: ~21 ms against
~75-90 ms for the full scan (pass 1 moves 384 + 12 + 4 MB; one core reads
~13 GB/s, both ~20 GB/s), ~8 ms against ~15 ms with the 10% filter.
"""

cimport openmp
from cython.parallel cimport prange

from libc.float cimport FLT_EPSILON
from libc.math cimport INFINITY, fabs, ldexp, nearbyint, nextafterf, sqrt
from libc.stdint cimport int8_t, int32_t

from _common cimport float32_t, heap_push, int64_t, uint8_t
from _scan cimport (
    ENGINE_PREFETCH,
    PREFETCH_AHEAD,
    dot_depth,
    gather,
    heap_stride,
    offer,
    prefetch,
    resolve_threads,
    skip_below,
)

import numpy as np

from engine._vectors import DEFAULT_CHUNK_ROWS, default_threads
from engine.errors import DimensionError, ValidationError

cdef extern from *:
    """
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

    """
    int32_t _dot_i8 "engine_dot_i8"(const uint8_t* qa, const int8_t* qs, const int8_t* r,
                                    Py_ssize_t dim) noexcept nogil


cdef enum:
    STATS = 3  # per-row quantisation stats: scale, error norm bound, code norm bound

# `candidates` gives up (None: run the full scan) beyond max(rows // 50, this many) candidates
MIN_CANDIDATE_LIMIT = 1024
# the widest vectors bracketed: |c . d| <= dim * 127^2 must fit the int32 dot product
MAX_DIM = 1 << 17
cdef double TINY = 1e-30  # keeps `_up`'s float32 rounding in the normal range (relative)


cdef Py_ssize_t _threads(int threads, Py_ssize_t work, Py_ssize_t units) except -1:
    """Threads for `work` (float32 values, or groups of 4 codes) in `units` pieces."""
    return resolve_threads(threads, default_threads() if threads <= 0 else 1, work, units)


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
    cdef Py_ssize_t nt = _threads(threads, n * dim * 4, n)
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
    """Bounds of row r's score (as `dot` computes it): returns the upper one, writes the lower one.

    w = (t, alpha, beta): A = s t (c . d), err = alpha en + beta cn.
    """
    cdef const float32_t* s = st + r * STATS
    cdef double a = (s[0] * w[0]) * _dot_i8(qa, qs, C + r * dim, dim)
    cdef double err = w[1] * s[1] + w[2] * s[2]
    lower[0] = a - err
    return a + err


cdef inline void _bound_row(const int8_t* C, const float32_t* st, Py_ssize_t dim, const uint8_t* qa,
                            const int8_t* qs, const double* w, Py_ssize_t r, float32_t* upper,
                            double* keys, int64_t* idx, Py_ssize_t* size, Py_ssize_t k,
                            double* thr) noexcept nogil:
    """Pass 1 for row r: its upper bound to `upper[r]`, its lower bound offered to the k-heap."""
    cdef double lo
    upper[r] = _up(_bracket(C, st, dim, qa, qs, w, r, &lo))
    offer(keys, idx, size, k, thr, lo, r)


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
        m = gather(mask, start, stop, cand)
        for i in range(min(m, PREFETCH_AHEAD)):
            prefetch(C + cand[i] * dim, dim)
        for i in range(m):
            if i + PREFETCH_AHEAD < m:
                prefetch(C + cand[i + PREFETCH_AHEAD] * dim, dim)
                ENGINE_PREFETCH(st + cand[i + PREFETCH_AHEAD] * STATS)
            _bound_row(C, st, dim, qa, qs, w, cand[i], upper, keys, idx, &size, k, &thr)
    size_io[0] = size


cdef tuple _quantise_query(const float32_t[::1] q):
    """|d| (uint8), d (int8) and w = (t, alpha, beta) for `_bound_row` (see the module note)."""
    cdef Py_ssize_t dim = q.shape[0], j, m = dot_depth(dim) + 16
    qa_arr = np.empty(dim, np.uint8)
    qs_arr = np.empty(dim, np.int8)
    w_arr = np.empty(3, np.float64)
    cdef uint8_t[::1] qa = qa_arr
    cdef int8_t[::1] qs = qs_arr
    cdef double[::1] w = w_arr
    cdef double amax = 0.0, t, inv = 0.0, v, f, qq = 0.0, ff = 0.0, q2, f2, rel
    cdef double u = ldexp(1.0, -53)  # double unit roundoff: `dot` accumulates in double
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
    rel = m * u / (1.0 - m * u)  # gamma_{m+16}, m = dot_depth(dim): see the module note
    w[0] = t
    w[1] = q2 + rel * (q2 + f2)
    w[2] = f2 + rel * (q2 + f2)
    return qa_arr, qs_arr, w_arr


def score_bounds(const int8_t[:, ::1] codes, const float32_t[:, ::1] stats, const float32_t[::1] q):
    """(lower float64, upper float32) bounds of every row's score with q, as pass 1 has them.

    The score is the one `topk` computes; the tests check lower <= score <= upper.
    """
    cdef Py_ssize_t n = codes.shape[0], dim = codes.shape[1], r
    if q.shape[0] != dim or stats.shape[0] != n or stats.shape[1] != STATS:
        raise DimensionError(
            f"codes {(n, dim)}, stats {(stats.shape[0], stats.shape[1])}, query {q.shape[0]}")
    if dim > MAX_DIM:
        raise DimensionError(f"dimension {dim} is past MAX_DIM = {MAX_DIM}: no bound is computed there")
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
    MIN_CANDIDATE_LIMIT)), fewer than k rows pass the mask or dim > MAX_DIM:
    the caller runs the full scan. Chunks, threads and mask as in `topk`.
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
    if n == 0 or dim == 0 or k > n or dim > MAX_DIM:
        return None
    qa_arr, qs_arr, w_arr = _quantise_query(q)
    cdef const uint8_t[::1] qa = qa_arr
    cdef const int8_t[::1] qs = qs_arr
    cdef const double[::1] w = w_arr
    chunk_rows = min(chunk_rows, n)
    cdef Py_ssize_t nchunks = (n + chunk_rows - 1) // chunk_rows
    cdef Py_ssize_t nt = _threads(threads, n * dim // 4, nchunks)
    cdef Py_ssize_t stride = heap_stride(k)
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
            j = skip_below(&upper[0], j, n, theta32)
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
