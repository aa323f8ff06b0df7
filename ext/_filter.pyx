# cython: language_level=3
"""The filter of the scan kernels: predicates on a stream's typed columns, evaluated chunk by chunk.

Design note. A query is a conjunction of predicates on typed numpy columns (engine/columns.py).
`parse_preds` validates the predicate tuples once into C structs (Pred); the kernels (engine._query:
count + page + top-k, engine._aggregate: sums per group) then call `select_chunk` once per CHUNK
rows, GIL released, and do their own work with the survivors. No N-sized mask is ever materialised.
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
  never match one.
- Narrow companions: the dense loops are memory-bound (the seed query over 1M
  rows reads every code and every reward: 12 MB of int32 + float64), so a
  predicate may carry a narrow copy of its column that engine.columns keeps:
  int8 codes (while the dictionary fits) or a float32 sketch (each value
  rounded to nearest). Rounding is monotone, so a sketch value strictly
  between the rounded bounds is inside the float64 range and one outside them
  is outside; only a value equal to a rounded bound needs its float64 value,
  read in a second pass over the chunk when the first saw any (next to
  never). The answer is the float64 answer; the scan reads 5 bytes a row, not
  12. The sparse path (and the kernels' sort keys) read the full columns.
- Zone maps: float columns come with (min, max) per ZONE_ROWS (= CHUNK) block.
  A block a range rules out is skipped without reading any column, so a
  "last 24 hours" filter touches only the recent blocks.
- Counting: a chunk that only needs counting (sel NULL) has its mask bytes summed, never
  compacted. `count_chunks` splits chunks over OpenMP threads (prange,
  dynamic schedule, a few chunks per claim); an integer sum is the same for
  every split.
- Threads: the default is ONE thread (ENGINE_THREADS overrides; `threads=`
  per call): on this 2-core VM shared with other work, libgomp's default
  spin-waiting made a second thread turn the 0.33 ms seed query into 8 ms
  medians (p90 16 ms: the worker waits for a 4 ms scheduler tick when the
  other core is busy), and with OMP_WAIT_POLICY=passive it gained nothing
  (0.35 vs 0.33 ms). On idle cores it halves the scan (min 0.17 ms).
- Why medians moved: the seed query is memory-bound, and a 12 MB scan fits
  this VM's L3 only while nothing else runs. When another process runs on
  the other core, the columns get evicted and the scan runs at DRAM speed
  (measured: median 1.31 ms with the cache flushed before every call, 0.5 ms
  with the same code on a quiet machine; no page faults, context switches or
  allocations involved). The narrow companions cut the bytes so that even a
  cold scan stays near 0.6 ms.
The C interface (Pred, Key, the cdef functions) is declared in ext/engine._filter.pxd.
"""

cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport INFINITY, isnan
from libc.stdint cimport INT64_MIN, int8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

cdef extern from *:
    """
    #if defined(_MSC_VER)
    #include <intrin.h>
    static __inline int engine_ctz64(unsigned __int64 x) {
        unsigned long i; _BitScanForward64(&i, x); return (int)i;
    }
    #else
    #define engine_ctz64(x) __builtin_ctzll(x)
    #endif
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define ENGINE_LITTLE_ENDIAN 0
    #else
    #define ENGINE_LITTLE_ENDIAN 1
    #endif
    """
    int engine_ctz64(uint64_t x) noexcept nogil
    bint ENGINE_LITTLE_ENDIAN


import numpy as np

from engine._native import env_threads
from engine.errors import ValidationError
from engine.streamcolumns import int_bounds

cnp.import_array()

cdef enum:
    CHUNK_WORDS = 128  # CHUNK / 8: the chunk's byte mask as 64-bit words
    SPARSE_SHIFT = 4   # under 1/16 of a chunk left, later predicates read only the survivors
    OP_SET = 0
    OP_RANGE = 1
    OP_MISSING = 2

ZONE_ROWS = CHUNK  # rows per zone-map block
PAR_ROWS = 1 << 18  # rows left to scan per extra thread before a second thread is worth waking


# ---------------------------------------------------------------------------- input conversion

cdef int kind_of(cnp.ndarray col) except -1:
    cdef object dt = col.dtype
    if dt.kind == "f" and dt.itemsize == 8:
        return K_F64
    if dt.kind == "i" and dt.itemsize in (4, 8):
        return K_CODE if dt.itemsize == 4 else K_I64
    if dt.kind == "u" and dt.itemsize == 1:
        return K_U8
    raise ValidationError(f"unsupported column dtype {dt}: use float64, int64, int32 codes or uint8/bool")


cdef cnp.ndarray column(object col, Py_ssize_t n, list keep):
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


cdef int parse_zones(object zones, Py_ssize_t n, const double** zmin, const double** zmax,
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
    cdef cnp.ndarray col = column(spec[1], n, keep)
    cdef cnp.ndarray lut
    narrow = spec[3] if op in ("eq", "in") and len(spec) == 4 else spec[5] if len(spec) == 6 else None
    zones = spec[4] if op == "range" and len(spec) >= 5 else None
    memset(p, 0, sizeof(Pred))
    p.kind = kind_of(col)
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
                parse_zones(zones, n, &p.zmin, &p.zmax, keep)
                p.lo32, p.hi32 = <float> p.lo, <float> p.hi
        elif p.kind == K_I64:
            bounds = int_bounds(lo, hi)
            if bounds is not None:
                p.ilo, p.ihi = bounds
        else:
            raise ValidationError("a 'range' predicate needs a float64 or int64 column")
        if bounds is None:  # matches nothing
            p.kind, p.ilo, p.ihi, p.zmin, p.zmax, p.narrow = K_I64, 1, 0, NULL, NULL, NULL
    if narrow is not None:
        raise ValidationError("a narrow companion goes only with an int32 code column or a float64 range")
    return 0


cdef Pred* parse_preds(object preds, Py_ssize_t n, Py_ssize_t* count, list keep) except NULL:
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
    """Set rows of a 0/1 byte mask of at most CHUNK_WORDS words.

    The words are added as 8 byte lanes (a lane gets at most CHUNK_WORDS = 128 ones, so none carries
    into the next), then the lanes are folded: a plain add loop the compiler vectorises, where a
    popcount per word was a serial chain that cost a tenth of the seed query (and more or less with
    the loop's code alignment).
    """
    cdef Py_ssize_t w
    cdef uint64_t s = 0
    for w in range(nwords):
        s += words[w]
    s = (s & 0x00FF00FF00FF00FFULL) + ((s >> 8) & 0x00FF00FF00FF00FFULL)  # 4 lanes of <= 256
    return <Py_ssize_t> ((s * 0x0001000100010001ULL) >> 48)  # their sum, in the top lane


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


cdef Py_ssize_t select_chunk(const Pred* preds, Py_ssize_t npreds, Py_ssize_t start, Py_ssize_t end,
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


# ---------------------------------------------------------------------------- counting

cdef inline Py_ssize_t _count_chunk(const Pred* preds, Py_ssize_t npreds, Py_ssize_t n,
                                    Py_ssize_t c) noexcept nogil:
    """How many rows of chunk c pass every predicate."""
    cdef Py_ssize_t total = 0
    select_chunk(preds, npreds, c * CHUNK, min(c * CHUNK + CHUNK, n), NULL, &total)
    return total


cdef Py_ssize_t count_chunks(const Pred* preds, Py_ssize_t npreds, Py_ssize_t n, Py_ssize_t c0,
                             Py_ssize_t c1, int nt) noexcept nogil:
    """Matching rows of chunks [c0, c1), over nt threads (an integer sum: any split gives the same)."""
    cdef Py_ssize_t c, total = 0
    if nt <= 1:
        for c in range(c0, c1):
            total += _count_chunk(preds, npreds, n, c)
        return total
    cdef Py_ssize_t claim = grab(c1 - c0, nt)
    for c in prange(c0, c1, num_threads=nt, schedule="dynamic", chunksize=claim):
        total += _count_chunk(preds, npreds, n, c)
    return total


# ---------------------------------------------------------------------------- threads

def default_threads():
    """Threads a scan may use when not told: ENGINE_THREADS, else 1 (see the design note: on a shared
    machine a second OpenMP thread costs more than it saves at this scale)."""
    n = env_threads()
    return 1 if n is None else n


cdef int resolve_threads(int threads, Py_ssize_t rows) except -1:
    """Explicit `threads` as given; else default_threads() capped so each thread scans >= PAR_ROWS."""
    if threads > 0:
        return threads
    return <int> max(1, min(<Py_ssize_t> default_threads(), rows // PAR_ROWS))
