# cython: language_level=3
"""Fused filter + count + top-k (and aggregate) kernels over a stream's typed columns.

Design note. A query is a conjunction of predicates on typed numpy columns
(engine/columns.py), an optional sort column and an offset/limit page. `select`
answers it in one pass over the rows, GIL released, chunk by chunk (CHUNK rows):
- Filter: each predicate is evaluated densely over the chunk into a byte mask
  on the stack (`mask[j] &= lo <= x[j] <= hi`): branch-free loops the
  compiler vectorises, reading each column sequentially. Once fewer than
  1/2**SPARSE_SHIFT of the chunk survives, the mask is compacted into row
  numbers and later predicates read only those rows. Compaction tests 8 rows
  per 64-bit word, so the empty words of a selective filter cost one test.
  Code predicates (== / `in` on int32 dictionary codes) compare directly for
  one code and otherwise look the code up in a byte table indexed by code+1
  (slot 0 = missing, out-of-range codes clamp to an always-0 last slot).
  Ranges are inclusive; NaN and the INT64_MIN / code -1 / byte 255 sentinels
  never match one. No N-sized mask is ever materialised.
- Narrow companions: the dense loops are memory-bound (the seed query over 1M
  rows reads every code and every reward: 12 MB of int32 + float64), so a
  predicate may carry a narrow copy of its column that engine.columns keeps:
  int8 codes (while the dictionary fits) or a float32 sketch (each value
  rounded to nearest). Rounding is monotone, so a sketch value strictly
  between the rounded bounds is inside the float64 range and one outside them
  is outside; only a value equal to a rounded bound needs its float64 value,
  read in a second pass over the chunk when the first saw any (next to
  never). The answer is the float64 answer; the scan reads 5 bytes a row, not
  12. The sparse path and the sort read the full columns.
- Zone maps: float columns come with (min, max) per ZONE_ROWS block. A block a
  range rules out is skipped without reading any column, so a "last 24 hours"
  filter touches only the recent blocks.
- Count + page: every chunk adds its survivors to total_count. Without a sort
  the page is the first offset+limit survivors; after that, chunks are only
  counted (popcount of the mask, no compaction).
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
  would save nothing more, so engine.columns keeps none.
- Threads: once the heap is full (or with no sort, once the page is), the
  remaining chunks can be split over OpenMP threads (prange, dynamic schedule,
  a few chunks per claim). Each thread keeps its own heap of the rows that
  beat the full heap's root (the floor) and prunes blocks against it; the
  heaps are merged into the main one at the end. Since heap content is
  order-independent and ties go to the lower row, the page is identical for
  every thread count. The default is ONE thread (ENGINE_THREADS overrides;
  `threads=` per call): on this 2-core VM shared with other work, libgomp's
  default spin-waiting made a second thread turn the 0.33 ms seed query into
  8 ms medians (p90 16 ms: the worker waits for a 4 ms scheduler tick when
  the other core is busy), and with OMP_WAIT_POLICY=passive it gained nothing
  (0.35 vs 0.33 ms). On idle cores it halves the scan (min 0.17 ms).
- Why medians moved: the seed query is memory-bound, and a 12 MB scan fits
  this VM's L3 only while nothing else runs. When another process runs on
  the other core, the columns get evicted and the scan runs at DRAM speed
  (measured: median 1.31 ms with the cache flushed before every call, 0.5 ms
  with the same code on a quiet machine; no page faults, context switches or
  allocations involved). The narrow companions cut the bytes so that even a
  cold scan stays near 0.6 ms.
`aggregate` / `aggregate_by` reuse the filter and fold survivors into (rows,
count, sum, min, max) of a value column, overall or per group code; sums run in
double in row order (one thread). A plain count splits over threads like
`select`. Int64 sort keys compare as float64 (exact up to 2**53).
"""

cimport numpy as cnp
cimport openmp
from cython.parallel cimport prange
from libc.math cimport INFINITY, NAN, isnan
from libc.stdint cimport INT64_MAX, INT64_MIN, int8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from _common cimport heap_better, heap_push, heap_sort_best_first, int32_t, int64_t, uint8_t, uint64_t

cdef extern from *:
    """
    #if defined(_MSC_VER)
    #include <intrin.h>
    #include <xmmintrin.h>
    static __inline int engine_ctz64(unsigned __int64 x) {
        unsigned long i; _BitScanForward64(&i, x); return (int)i;
    }
    #define engine_popcount64(x) ((Py_ssize_t)__popcnt64(x))
    #define engine_prefetch(p) _mm_prefetch((const char*)(p), _MM_HINT_T0)
    #else
    #define engine_ctz64(x) __builtin_ctzll(x)
    #define engine_popcount64(x) ((Py_ssize_t)__builtin_popcountll(x))
    #define engine_prefetch(p) __builtin_prefetch(p)
    #endif
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define ENGINE_LITTLE_ENDIAN 0
    #else
    #define ENGINE_LITTLE_ENDIAN 1
    #endif
    """
    int engine_ctz64(uint64_t x) noexcept nogil
    Py_ssize_t engine_popcount64(uint64_t x) noexcept nogil
    void engine_prefetch(const void* p) noexcept nogil
    bint ENGINE_LITTLE_ENDIAN

import math
import os

import numpy as np

from engine.errors import ConfigError, ValidationError

cnp.import_array()

cdef enum:
    CHUNK = 1024
    CHUNK_WORDS = 128  # CHUNK / 8: the chunk's byte mask as 64-bit words
    SPARSE_SHIFT = 4   # under 1/16 of a chunk left, later predicates read only the survivors
    K_F64 = 0
    K_I64 = 1
    K_CODE = 2
    K_U8 = 3
    OP_SET = 0
    OP_RANGE = 1
    OP_MISSING = 2
    GRAB_CHUNKS = 16   # chunks a thread takes at a time (dynamic schedule)
    SIZE_STRIDE = 8    # per-thread heap sizes a cache line apart

ZONE_ROWS = CHUNK  # rows per zone-map block
PAR_ROWS = 1 << 18  # rows left to scan per extra thread before a second thread is worth waking


cdef struct Pred:
    int op
    int kind
    const void* data
    bint has_single      # a code set of exactly one code: compare instead of looking up
    int32_t single
    const uint8_t* lut
    uint64_t last        # highest LUT slot (the always-0 clamp slot of a code table)
    double lo
    double hi
    int64_t ilo
    int64_t ihi
    const double* zmin   # zone map of a float64 range column, or NULL
    const double* zmax
    const void* narrow   # int8 copy of a code column / float32 sketch of a float64 column, or NULL
    float lo32           # lo and hi rounded to float32, for the sketch
    float hi32


cdef struct Key:
    int kind
    const void* data
    Py_ssize_t width     # bytes per value
    const double* rank   # code -> key, with a NaN slot at both ends (missing / out of range)
    uint64_t last
    bint desc
    const double* zmin   # zone map of a float64 sort column, or NULL
    const double* zmax


# ---------------------------------------------------------------------------- input conversion

cdef int _kind_of(cnp.ndarray col) except -1:
    cdef object dt = col.dtype
    if dt.kind == "f" and dt.itemsize == 8:
        return K_F64
    if dt.kind == "i" and dt.itemsize in (4, 8):
        return K_CODE if dt.itemsize == 4 else K_I64
    if dt.kind == "u" and dt.itemsize == 1:
        return K_U8
    raise ValidationError(f"unsupported column dtype {dt}: use float64, int64, int32 codes or uint8/bool")


cdef cnp.ndarray _column(object col, Py_ssize_t n, list keep):
    """`col` as a contiguous, native-order 1-D array with at least n rows (bool viewed as uint8)."""
    if not isinstance(col, np.ndarray) or col.ndim != 1:
        raise ValidationError(f"a column must be a 1-D numpy array, got {type(col).__name__}")
    if col.shape[0] < n:
        raise ValidationError(f"a column has {col.shape[0]} rows, fewer than n={n}")
    if not col.dtype.isnative:
        col = col.astype(col.dtype.newbyteorder("="))
    if col.dtype == np.bool_:
        col = col.view(np.uint8)
    col = np.ascontiguousarray(col)
    keep.append(col)
    return col


cdef int _parse_zones(object zones, Py_ssize_t n, const double** zmin, const double** zmax,
                      list keep) except -1:
    """Point zmin/zmax at (block min, block max) float64 arrays covering [0, n), or NULL for None."""
    zmin[0] = NULL
    zmax[0] = NULL
    cdef Py_ssize_t blocks = (n + CHUNK - 1) // CHUNK
    if zones is None or blocks == 0:
        return 0
    if not isinstance(zones, tuple) or len(zones) != 2:
        raise ValidationError("zones must be a (block_min, block_max) tuple of float64 arrays")
    lo = np.ascontiguousarray(zones[0], dtype=np.float64)
    hi = np.ascontiguousarray(zones[1], dtype=np.float64)
    if lo.ndim != 1 or hi.ndim != 1 or lo.shape[0] < blocks or hi.shape[0] < blocks:
        raise ValidationError(f"zones must cover {blocks} blocks of {CHUNK} rows")
    keep.extend((lo, hi))
    zmin[0] = <const double*> cnp.PyArray_DATA(lo)
    zmax[0] = <const double*> cnp.PyArray_DATA(hi)
    return 0


cdef object _int_bounds(object lo, object hi):
    """Inclusive int64 bounds for number/None bounds (ceil lo, floor hi, clamped so that the missing
    sentinel INT64_MIN is outside); None when nothing can match."""
    out = []
    for b, is_lo in ((lo, True), (hi, False)):
        if isinstance(b, (float, np.floating)):
            b = float(b)
            if math.isnan(b) or b == (math.inf if is_lo else -math.inf):
                return None
            b = None if math.isinf(b) else (math.ceil(b) if is_lo else math.floor(b))
        out.append(None if b is None else int(b))
    ilo = INT64_MIN + 1 if out[0] is None else max(out[0], INT64_MIN + 1)
    ihi = INT64_MAX if out[1] is None else min(out[1], INT64_MAX)
    return (ilo, ihi) if ilo <= INT64_MAX and ihi >= INT64_MIN + 1 else None


cdef const void* _parse_narrow(object narrow, object dtype, Py_ssize_t n, list keep) except? NULL:
    """The data of a narrow companion column (see `select`), or NULL for None."""
    if narrow is None:
        return NULL
    if not isinstance(narrow, np.ndarray) or narrow.ndim != 1 or narrow.dtype != dtype:
        raise ValidationError(f"a narrow companion of this column must be a 1-D {np.dtype(dtype)} array")
    if narrow.shape[0] < n:
        raise ValidationError(f"a narrow companion has {narrow.shape[0]} rows, fewer than n={n}")
    narrow = np.ascontiguousarray(narrow)
    keep.append(narrow)
    return cnp.PyArray_DATA(narrow)


cdef int _parse_pred(object spec, Py_ssize_t n, Pred* p, list keep) except -1:
    """Fill p from one predicate tuple (see `select`)."""
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValidationError(f"a predicate must be a tuple (op, column, ...), got {spec!r}")
    op = spec[0]
    arity = {"eq": (3, 4), "in": (3, 4), "range": (4, 5, 6), "missing": (2,)}.get(op)
    if arity is None or len(spec) not in arity:
        raise ValidationError(f"malformed predicate {spec!r}: use eq/in/range/missing (see select)")
    cdef cnp.ndarray col = _column(spec[1], n, keep)
    cdef cnp.ndarray lut
    narrow = spec[3] if op in ("eq", "in") and len(spec) == 4 else spec[5] if len(spec) == 6 else None
    zones = spec[4] if op == "range" and len(spec) >= 5 else None
    memset(p, 0, sizeof(Pred))
    p.kind = _kind_of(col)
    p.data = cnp.PyArray_DATA(col)
    if op == "eq":
        if spec[2] is None:
            op = "missing"
        elif p.kind == K_CODE or p.kind == K_U8:
            op, spec = "in", (op, spec[1], (spec[2],))
        else:
            op, spec = "range", (op, spec[1], spec[2], spec[2])
    if op == "missing":
        p.op = OP_MISSING
    elif op == "in":
        if p.kind != K_CODE and p.kind != K_U8:
            raise ValidationError("an 'in' predicate needs an int32 code column or a uint8/bool column")
        values = {int(v) for v in spec[2] if int(v) >= -1}  # codes below -1 never match
        p.op = OP_SET
        if p.kind == K_U8:  # bools: -1 (missing) is any byte but 0 and 1
            lut = np.zeros(256, np.uint8)
            lut[[v for v in values if 0 <= v <= 255]] = 1
            if -1 in values:
                lut[2:] = 1
            p.last = 255
        else:
            lut = np.zeros(max(values, default=-1) + 3, np.uint8)
            lut[[v + 1 for v in values]] = 1
            p.last = lut.shape[0] - 1
            if len(values) == 1:
                p.has_single = True
                p.single = next(iter(values))
            p.narrow = _parse_narrow(narrow, np.int8, n, keep)
            narrow = None
        keep.append(lut)
        p.lut = <const uint8_t*> cnp.PyArray_DATA(lut)
    else:
        lo, hi = spec[2], spec[3]
        for b in (lo, hi):
            if b is not None and (isinstance(b, str) or not isinstance(b, (int, float, np.number))):
                raise ValidationError(f"a range bound must be a number or None, got {b!r}")
        p.op = OP_RANGE
        bounds = None
        if p.kind == K_F64:
            p.lo = -INFINITY if lo is None else float(lo)
            p.hi = INFINITY if hi is None else float(hi)
            p.narrow = _parse_narrow(narrow, np.float32, n, keep)
            narrow = None
            bounds = None if isnan(p.lo) or isnan(p.hi) else ()
            if bounds is not None:
                _parse_zones(zones, n, &p.zmin, &p.zmax, keep)
                p.lo32, p.hi32 = <float> p.lo, <float> p.hi
        elif p.kind == K_I64:
            bounds = _int_bounds(lo, hi)
            if bounds is not None:
                p.ilo, p.ihi = bounds
        else:
            raise ValidationError("a 'range' predicate needs a float64 or int64 column")
        if bounds is None:  # matches nothing
            p.kind, p.ilo, p.ihi, p.zmin, p.zmax, p.narrow = K_I64, 1, 0, NULL, NULL, NULL
    if narrow is not None:
        raise ValidationError("a narrow companion goes only with an int32 code column or a float64 range")
    return 0


cdef Pred* _parse_preds(object preds, Py_ssize_t n, Py_ssize_t* count, list keep) except NULL:
    specs = list(preds)
    cdef Py_ssize_t i
    cdef Pred* out = <Pred*> malloc(max(len(specs), 1) * sizeof(Pred))
    if out == NULL:
        raise MemoryError()
    try:
        for i in range(len(specs)):
            _parse_pred(specs[i], n, &out[i], keep)
    except BaseException:
        free(out)
        raise
    count[0] = len(specs)
    return out


cdef int _parse_key(object sort, bint descending, object sort_rank, object zones, Py_ssize_t n,
                    Key* k, list keep) except -1:
    cdef cnp.ndarray col = _column(sort, n, keep)
    cdef cnp.ndarray rank
    memset(k, 0, sizeof(Key))
    k.kind = _kind_of(col)
    k.data = cnp.PyArray_DATA(col)
    k.width = col.dtype.itemsize
    k.desc = descending
    if k.kind == K_F64:
        _parse_zones(zones, n, &k.zmin, &k.zmax, keep)
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


# ---------------------------------------------------------------------------- the fused loops

cdef inline int _passes(const Pred* p, Py_ssize_t i) noexcept nogil:
    """Row i against p (the scalar form of _mask_and)."""
    cdef uint64_t u
    cdef double v
    cdef int64_t w
    if p.op == OP_SET:
        if p.kind == K_CODE:
            u = <uint64_t> (<int64_t> (<const int32_t*> p.data)[i] + 1)
            return p.lut[u if u < p.last else p.last]
        return p.lut[(<const uint8_t*> p.data)[i]]
    if p.op == OP_RANGE:
        if p.kind == K_F64:
            v = (<const double*> p.data)[i]
            return (v >= p.lo) & (v <= p.hi)
        w = (<const int64_t*> p.data)[i]
        return (w >= p.ilo) & (w <= p.ihi)
    if p.kind == K_F64:
        return isnan((<const double*> p.data)[i])
    if p.kind == K_I64:
        return (<const int64_t*> p.data)[i] == INT64_MIN
    if p.kind == K_CODE:
        return (<const int32_t*> p.data)[i] < 0
    return (<const uint8_t*> p.data)[i] > 1


cdef void _mask_and(const Pred* p, Py_ssize_t start, Py_ssize_t count, uint8_t* mask) noexcept nogil:
    """mask[j] &= (row start + j passes p): one branch-free loop per column type, so it vectorises."""
    cdef Py_ssize_t j
    cdef const int32_t* codes = (<const int32_t*> p.data) + start
    cdef const uint8_t* small = (<const uint8_t*> p.data) + start
    cdef const double* f = (<const double*> p.data) + start
    cdef const int64_t* q = (<const int64_t*> p.data) + start
    cdef const int8_t* c8 = (<const int8_t*> p.narrow) + start
    cdef const float* s32 = (<const float*> p.narrow) + start
    cdef const uint8_t* lut = p.lut
    cdef uint64_t u, last = p.last
    cdef int32_t one = p.single
    cdef int8_t one8 = <int8_t> p.single
    cdef double v, lo = p.lo, hi = p.hi
    cdef float v32, lo32 = p.lo32, hi32 = p.hi32
    cdef int64_t w, ilo = p.ilo, ihi = p.ihi
    cdef uint8_t edge = 0
    if p.op == OP_SET and p.kind == K_CODE and p.narrow != NULL:
        if p.has_single and one != one8:  # a code no int8 copy can hold: nothing matches
            memset(mask, 0, count)
        elif p.has_single:
            for j in range(count):
                mask[j] &= c8[j] == one8
        else:
            for j in range(count):
                u = <uint64_t> (<int64_t> c8[j] + 1)
                mask[j] &= lut[u if u < last else last]
    elif p.op == OP_SET and p.kind == K_CODE and p.has_single:
        for j in range(count):
            mask[j] &= codes[j] == one
    elif p.op == OP_SET and p.kind == K_CODE:
        for j in range(count):
            u = <uint64_t> (<int64_t> codes[j] + 1)
            mask[j] &= lut[u if u < last else last]
    elif p.op == OP_SET:
        for j in range(count):
            mask[j] &= lut[small[j]]
    elif p.op == OP_RANGE and p.kind == K_F64 and p.narrow != NULL:
        # float32 rounding is monotone: a sketch value strictly inside (lo32, hi32) is inside
        # [lo, hi], one outside [lo32, hi32] is outside; only a value equal to lo32 or hi32 (an
        # "edge", next to never) needs the float64 value
        for j in range(count):
            v32 = s32[j]
            mask[j] &= (v32 >= lo32) & (v32 <= hi32)
            edge |= (v32 == lo32) | (v32 == hi32)
        if edge:
            for j in range(count):
                if s32[j] == lo32 or s32[j] == hi32:
                    mask[j] &= (f[j] >= lo) & (f[j] <= hi)
    elif p.op == OP_RANGE and p.kind == K_F64:
        for j in range(count):
            v = f[j]
            mask[j] &= (v >= lo) & (v <= hi)
    elif p.op == OP_RANGE:
        for j in range(count):
            w = q[j]
            mask[j] &= (w >= ilo) & (w <= ihi)
    else:
        for j in range(count):
            mask[j] &= _passes(p, start + j)


cdef inline Py_ssize_t _popcount(const uint64_t* words, Py_ssize_t nwords) noexcept nogil:
    """Set rows of a 0/1 byte mask (a set byte has exactly one bit)."""
    cdef Py_ssize_t w, s = 0
    for w in range(nwords):
        s += engine_popcount64(words[w])
    return s


cdef Py_ssize_t _compact(const uint64_t* words, Py_ssize_t count, Py_ssize_t base,
                         int64_t* sel) noexcept nogil:
    """Row numbers (base + j) of the set bytes of a 0/1 byte mask, ascending, into sel."""
    cdef const uint8_t* mask = <const uint8_t*> words
    cdef Py_ssize_t j, w, m = 0
    cdef uint64_t x
    if ENGINE_LITTLE_ENDIAN:
        for w in range((count + 7) >> 3):
            x = words[w]
            while x:
                sel[m] = base + (w << 3) + (engine_ctz64(x) >> 3)
                m += 1
                x &= x - 1
    else:
        for j in range(count):
            sel[m] = base + j
            m += mask[j]
    return m


cdef Py_ssize_t _select_chunk(const Pred* preds, Py_ssize_t npreds, Py_ssize_t start, Py_ssize_t end,
                              int64_t* sel, Py_ssize_t* total) noexcept nogil:
    """The rows of [start, end) passing every predicate, ascending, into sel; returns how many.

    Adds their number to total[0]. sel NULL: count only. start must be a multiple of CHUNK.
    """
    cdef uint64_t words[CHUNK_WORDS]
    cdef uint8_t* mask = <uint8_t*> words
    cdef Py_ssize_t count = end - start, nwords = (end - start + 7) >> 3
    cdef Py_ssize_t j, k, m = 0, s, b = start // CHUNK
    cdef bint dense = True
    cdef const Pred* z
    for k in range(npreds):  # a zone map that rules the block out: nothing to read
        z = &preds[k]
        if z.zmin != NULL and not (z.zmax[b] >= z.lo and z.zmin[b] <= z.hi):
            return 0
    if npreds == 0:
        total[0] += count
        if sel == NULL:
            return 0
        for m in range(count):
            sel[m] = start + m
        return count
    memset(mask, 1, count)
    memset(mask + count, 0, (nwords << 3) - count)
    for k in range(npreds):
        if dense and k > 0 and sel != NULL:
            s = _popcount(words, nwords)
            if s == 0:
                return 0
            if (s << SPARSE_SHIFT) < count:
                m = _compact(words, count, start, sel)
                dense = False
        if dense:
            _mask_and(&preds[k], start, count, mask)
        else:
            s = 0
            for j in range(m):
                sel[s] = sel[j]
                s += _passes(&preds[k], sel[j])
            m = s
            if m == 0:
                return 0
    if dense:
        total[0] += _popcount(words, nwords)
        return 0 if sel == NULL else _compact(words, count, start, sel)
    total[0] += m
    return m


cdef inline double _key(const Key* k, Py_ssize_t i) noexcept nogil:
    """The row's goodness for the heap (higher = earlier); NaN when its sort value is missing."""
    cdef double v
    cdef uint64_t u
    cdef int64_t w
    cdef uint8_t b
    if k.kind == K_F64:
        v = (<const double*> k.data)[i]
    elif k.kind == K_I64:
        w = (<const int64_t*> k.data)[i]
        v = NAN if w == INT64_MIN else <double> w
    elif k.kind == K_CODE:
        u = <uint64_t> (<int64_t> (<const int32_t*> k.data)[i] + 1)
        v = k.rank[u if u < k.last else k.last]
    else:
        b = (<const uint8_t*> k.data)[i]
        v = NAN if b > 1 else <double> b
    return v if k.desc else -v


cdef inline Py_ssize_t _grab(Py_ssize_t chunks, int nt) noexcept nogil:
    """Chunks a thread claims at a time: GRAB_CHUNKS, fewer when that would leave a thread idle."""
    return max(1, min(<Py_ssize_t> GRAB_CHUNKS, chunks // (4 * nt)))


cdef inline Py_ssize_t _count_chunk(const Pred* preds, Py_ssize_t npreds, Py_ssize_t n,
                                    Py_ssize_t c) noexcept nogil:
    """How many rows of chunk c pass every predicate."""
    cdef Py_ssize_t total = 0
    _select_chunk(preds, npreds, c * CHUNK, min(c * CHUNK + CHUNK, n), NULL, &total)
    return total


cdef Py_ssize_t _count_chunks(const Pred* preds, Py_ssize_t npreds, Py_ssize_t n, Py_ssize_t c0,
                              Py_ssize_t c1, int nt) noexcept nogil:
    """Matching rows of chunks [c0, c1), over nt threads (an integer sum: any split gives the same)."""
    cdef Py_ssize_t c, total = 0
    if nt <= 1:
        for c in range(c0, c1):
            total += _count_chunk(preds, npreds, n, c)
        return total
    cdef Py_ssize_t grab = _grab(c1 - c0, nt)
    for c in prange(c0, c1, num_threads=nt, schedule="dynamic", chunksize=grab):
        total += _count_chunk(preds, npreds, n, c)
    return total


cdef Py_ssize_t _scan_page(const Pred* preds, Py_ssize_t npreds, Py_ssize_t n, int64_t* page,
                           Py_ssize_t cap, Py_ssize_t* kept, int nt) noexcept nogil:
    """No sort: the first `cap` matching rows in offset order; returns total matches.

    The page fills from the first chunks on this thread; the chunks after it are only counted, split
    over nt threads.
    """
    cdef int64_t sel[CHUNK]
    cdef Py_ssize_t c = 0, nchunks = (n + CHUNK - 1) // CHUNK, m, j, total = 0, got = 0
    while c < nchunks and got < cap:
        m = _select_chunk(preds, npreds, c * CHUNK, min(c * CHUNK + CHUNK, n), sel, &total)
        for j in range(min(m, cap - got)):
            page[got + j] = sel[j]
        got += min(m, cap - got)
        c += 1
    kept[0] = got
    return total + _count_chunks(preds, npreds, n, c, nchunks, nt)


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
    m = _select_chunk(preds, npreds, c * CHUNK, min(c * CHUNK + CHUNK, n), sel if admit else NULL, &total)
    for j in range(m):  # the survivors' sort values are scattered: ask for all their cache lines at once
        engine_prefetch(<const char*> key.data + sel[j] * key.width)
    for j in range(m):
        g = _key(key, sel[j])
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
        return _count_chunks(preds, npreds, n, c0, c1, nt)
    if nt <= 1:
        for c in range(c0, c1):
            total += _heap_chunk(preds, npreds, n, key, c, hk, hi, hsize, NULL, NULL, NULL, cap, fk, fi)
        return total
    cdef Py_ssize_t grab = _grab(c1 - c0, nt)
    fk, fi = hk[0], hi[0]
    for c in prange(c0, c1, num_threads=nt, schedule="dynamic", chunksize=grab):
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


# ---------------------------------------------------------------------------- entry points

def default_threads():
    """Threads a scan may use when not told: ENGINE_THREADS, else 1 (see the design note: on a shared
    machine a second OpenMP thread costs more than it saves at this scale)."""
    raw = os.environ.get("ENGINE_THREADS", "").strip()
    if raw:
        try:
            nt = int(raw)
        except ValueError:
            raise ConfigError(f"ENGINE_THREADS must be a positive integer, got {raw!r}") from None
        if nt <= 0:
            raise ConfigError(f"ENGINE_THREADS must be a positive integer, got {raw!r}")
        return nt
    return 1


cdef int _resolve_threads(int threads, Py_ssize_t rows) except -1:
    """Explicit `threads` as given; else default_threads() capped so each thread scans >= PAR_ROWS."""
    if threads > 0:
        return threads
    return <int> max(1, min(<Py_ssize_t> default_threads(), rows // PAR_ROWS))


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
    cdef Pred* p = _parse_preds(preds, n, &npreds, keep)
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
            nt = _resolve_threads(threads, n)
            with nogil:
                total = _scan_page(p, npreds, n, <int64_t*> cnp.PyArray_DATA(page), cap, &kept, nt)
            return (page if offset == 0 and kept == cap else page[offset:kept].copy()), total
        backward = _key(&key, n - 1) > _key(&key, 0)
        scratch = malloc(4 * max(cap, 1) * 8)  # the page heap and the missing-key heap
        if scratch == NULL:
            raise MemoryError()
        hk = <double*> scratch
        hi = <int64_t*> (hk + cap)
        mk = <double*> (hi + cap)
        mi = <int64_t*> (mk + cap)
        with nogil:
            total = _seed_heap(p, npreds, n, &key, backward, hk, hi, &hsize, mk, mi, &msize, cap, &lo, &hi_c)
        nt = _resolve_threads(threads, (hi_c - lo) * CHUNK)
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


cdef void _fold(const Pred* p, Py_ssize_t npreds, Py_ssize_t n, int vkind, const void* vdata,
                int gkind, const void* gdata, Py_ssize_t ngroups, int64_t* rows, int64_t* cnt,
                double* sm, double* mn, double* mx) noexcept nogil:
    cdef int64_t sel[CHUNK]
    cdef Py_ssize_t start = 0, m, j, g, total = 0
    cdef int64_t i
    cdef Key value
    cdef double v
    if gkind < 0 and vkind < 0:  # a plain count: no row numbers needed
        rows[0] = _count_chunks(p, npreds, n, 0, (n + CHUNK - 1) // CHUNK, 1)
        return
    memset(&value, 0, sizeof(Key))
    value.kind, value.data, value.desc = vkind, vdata, True
    while start < n:
        m = _select_chunk(p, npreds, start, min(start + CHUNK, n), sel, &total)
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
            v = _key(&value, i)
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
    cdef int nt = _resolve_threads(threads, n)
    cdef Pred* p = _parse_preds(preds, n, &npreds, keep)
    try:
        with nogil:
            total = _count_chunks(p, npreds, n, 0, (n + CHUNK - 1) // CHUNK, nt)
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
    cdef Pred* p = _parse_preds(preds, n, &npreds, keep)
    try:
        if value is not None:
            col = _column(value, n, keep)
            vkind, vdata = _kind_of(col), cnp.PyArray_DATA(col)
            if vkind == K_CODE:
                raise ValidationError("cannot aggregate an int32 code column: group by it instead")
        if group is not None:
            col = _column(group, n, keep)
            gkind, gdata = _kind_of(col), cnp.PyArray_DATA(col)
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
    """(rows, count, sum, min, max) over rows [0, n) matching `preds` (as in `select`).

    rows counts the matching rows; count/sum/min/max cover their non-missing `value`s (a float64,
    int64 or uint8/bool column); min/max are NaN when count is 0. Without a value column count = rows,
    and the count is split over `threads` as in `select`; sums run on one thread, in row order.
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
