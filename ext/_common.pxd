# cython: language_level=3
"""Shared C-level declarations for the engine's kernels.

The size-k heap lives here because the query kernel (newest-k by timestamp)
and the vector kernel (top-k by cosine) both keep one. It is a min-heap on
"goodness": the root is the worst item kept, so a candidate only has to beat
the root. Goodness is (key descending, index ascending): equal keys keep the
lower row index, which makes top-k selection stable.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

ctypedef float float32_t
ctypedef double float64_t


cdef inline bint heap_better(double ka, int64_t ia, double kb, int64_t ib) noexcept nogil:
    """True when (ka, ia) ranks before (kb, ib)."""
    return ka > kb or (ka == kb and ia < ib)


cdef inline void heap_sift_down(double* keys, int64_t* idx, Py_ssize_t n,
                                Py_ssize_t pos) noexcept nogil:
    cdef Py_ssize_t child, right
    cdef double k = keys[pos]
    cdef int64_t i = idx[pos]
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        right = child + 1
        # pick the worse child (the one the other is better than)
        if right < n and heap_better(keys[child], idx[child], keys[right], idx[right]):
            child = right
        if heap_better(k, i, keys[child], idx[child]):
            keys[pos] = keys[child]
            idx[pos] = idx[child]
            pos = child
        else:
            break
    keys[pos] = k
    idx[pos] = i


cdef inline void heap_sift_up(double* keys, int64_t* idx, Py_ssize_t pos) noexcept nogil:
    cdef Py_ssize_t parent
    cdef double k = keys[pos]
    cdef int64_t i = idx[pos]
    while pos > 0:
        parent = (pos - 1) >> 1
        if heap_better(keys[parent], idx[parent], k, i):
            keys[pos] = keys[parent]
            idx[pos] = idx[parent]
            pos = parent
        else:
            break
    keys[pos] = k
    idx[pos] = i


cdef inline void heap_push(double* keys, int64_t* idx, Py_ssize_t* size, Py_ssize_t cap,
                           double key, int64_t i) noexcept nogil:
    """Offer (key, i) to a heap holding at most `cap` items."""
    if size[0] < cap:
        keys[size[0]] = key
        idx[size[0]] = i
        heap_sift_up(keys, idx, size[0])
        size[0] += 1
    elif cap > 0 and heap_better(key, i, keys[0], idx[0]):
        keys[0] = key
        idx[0] = i
        heap_sift_down(keys, idx, size[0], 0)


cdef inline void heap_sort_best_first(double* keys, int64_t* idx, Py_ssize_t n) noexcept nogil:
    """Sort the heap in place so that position 0 holds the best item."""
    cdef Py_ssize_t end = n
    cdef double tk
    cdef int64_t ti
    while end > 1:
        end -= 1
        tk = keys[0]
        ti = idx[0]
        keys[0] = keys[end]
        idx[0] = idx[end]
        keys[end] = tk
        idx[end] = ti
        heap_sift_down(keys, idx, end, 0)
    # each pass moved the current worst to the shrinking end, so 0 holds the best
