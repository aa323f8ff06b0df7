# cython: language_level=3
"""What engine._filter (ext/_filter.pyx) shares with the kernels that scan through it.

The file name is dotted because Cython finds a module's .pxd by its qualified name and, on a cimport,
imports that module by the same name at run time: `engine._filter`, not `_filter` (ext/ is not a
package). Only `cdef` functions cross the module boundary, through pointers, once per chunk at most;
the per-row helper `row_key` is inline so that each kernel compiles its own copy.
"""

cimport numpy as cnp
from libc.math cimport NAN
from libc.stdint cimport INT64_MIN

from _common cimport int32_t, int64_t, uint8_t, uint64_t

cdef enum:
    CHUNK = 1024       # rows per chunk, and per zone-map block (ZONE_ROWS)
    K_F64 = 0
    K_I64 = 1
    K_CODE = 2
    K_U8 = 3
    GRAB_CHUNKS = 16   # chunks a thread takes at a time (dynamic schedule)


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


cdef int kind_of(cnp.ndarray col) except -1
cdef cnp.ndarray column(object col, Py_ssize_t n, list keep)
cdef int parse_zones(object zones, Py_ssize_t n, const double** zmin, const double** zmax,
                     list keep) except -1
cdef Pred* parse_preds(object preds, Py_ssize_t n, Py_ssize_t* count, list keep) except NULL
cdef int resolve_threads(int threads, Py_ssize_t rows) except -1
cdef Py_ssize_t select_chunk(const Pred* preds, Py_ssize_t npreds, Py_ssize_t start, Py_ssize_t end,
                             int64_t* sel, Py_ssize_t* total) noexcept nogil
cdef Py_ssize_t count_chunks(const Pred* preds, Py_ssize_t npreds, Py_ssize_t n, Py_ssize_t c0,
                             Py_ssize_t c1, int nt) noexcept nogil


cdef inline Py_ssize_t grab(Py_ssize_t chunks, int nt) noexcept nogil:
    """Chunks a thread claims at a time: GRAB_CHUNKS, fewer when that would leave a thread idle."""
    return max(1, min(<Py_ssize_t> GRAB_CHUNKS, chunks // (4 * nt)))


cdef inline double row_key(const Key* k, Py_ssize_t i) noexcept nogil:
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
