# cython: language_level=3
# distutils: language = c++
"""Stream rows -> typed column values, for engine.columns: the loop that builds a stream's columns.

Design note. Building the columns of 1M actions took ~5 us a row: orjson built each row's whole
object tree (nested dicts included) and Python then looped over the cursor, made a tuple of the
row's fields, transposed each page and converted one list per column. `decode_rows` does it in one
C loop: it steps the cursor and reads only the schema's fields out of each row's top-level object
with a scanner of its own (below), writing each value straight into its column's page array; a
row outside the scanner's strict subset of JSON goes to orjson, the dict path. ~2 us a row, most of
it now LMDB and the scan itself. The file is C++ for std::from_chars, the correctly rounded,
locale-independent double parser of libstdc++ 12 (CPython's float() takes ~0.5 us on a 17-digit
double, from_chars ~35 ns).

The conversions are exactly those of the reference in engine.columns (`_floats`, `_ints`, `_bools`,
`CodeDictionary.encode`), which tests/test_rowdecode.py checks value by value:
- float column: a float, an int or a bool as a double (an int too big for a double: NaN); anything
  else NaN.
- int column: an int or a bool in (INT64_MIN, INT64_MAX], or a float with an integral value in that
  range; anything else INT64_MIN (the missing marker).
- bool column: True 1, False 0, anything else 255.
- code column: a str gets its dictionary code, new strings the next code in order of appearance
  (the dictionary's `index` dict and `values` list are updated in place); anything else -1.
A row that is not JSON, or not an object, is missing in every column.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_Append
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject
from libc.math cimport NAN, floor, isfinite
from libc.stdint cimport INT64_MIN, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy


cdef extern from "Python.h":
    object PyUnicode_DecodeASCII(const char* s, Py_ssize_t size, const char* errors)


cdef extern from "<charconv>" namespace "std" nogil:
    cppclass errc:
        pass

    cppclass from_chars_result:
        const char* ptr
        errc ec

    # correctly rounded and locale-independent (libstdc++ >= 12: the fast_float algorithm)
    from_chars_result from_chars(const char* first, const char* last, double& value)


cdef extern from *:
    """
    static inline int rowdecode_parse_double(const char* first, const char* last, double* out) {
        auto r = std::from_chars(first, last, *out);
        return r.ec == std::errc() && r.ptr == last;
    }
    """
    bint parse_double "rowdecode_parse_double"(
        const char* first, const char* last, double* out
    ) noexcept nogil

cimport numpy as cnp

cnp.import_array()

cdef enum:
    K_FLOAT = 0
    K_INT = 1
    K_CODE = 2
    K_BOOL = 3

KIND_CODES = {"float": K_FLOAT, "int": K_INT, "code": K_CODE, "bool": K_BOOL}
_DTYPES = {K_FLOAT: "float64", K_INT: "int64", K_CODE: "int32", K_BOOL: "uint8"}

cdef double TWO63 = 9223372036854775808.0


cdef inline double _as_double(object v):
    cdef type t = type(v)
    if t is float:
        return PyFloat_AS_DOUBLE(v)
    if t is int or t is bool:
        try:
            return float(v)
        except OverflowError:
            return NAN
    return NAN


cdef inline int64_t _as_int64(object v):
    cdef type t = type(v)
    cdef double x
    cdef int overflow = 0
    cdef long long r
    if t is int:
        r = PyLong_AsLongLongAndOverflow(v, &overflow)
        return INT64_MIN if overflow else <int64_t>r
    if t is bool:
        return 1 if v is True else 0
    if t is float:
        x = PyFloat_AS_DOUBLE(v)
        if isfinite(x) and floor(x) == x and -TWO63 < x < TWO63:
            return <int64_t>x
    return INT64_MIN


cdef inline int32_t _code(object v, dict index, list values):
    cdef PyObject* found
    cdef Py_ssize_t code
    if type(v) is not str:
        return -1
    found = PyDict_GetItem(index, v)
    if found is not NULL:
        return <int32_t><object>found
    code = len(values)
    PyDict_SetItem(index, v, code)
    PyList_Append(values, v)
    return <int32_t>code


cdef inline void _put(int kind, char* col, Py_ssize_t i, object v, dict index, list values):
    if kind == K_FLOAT:
        (<double*>col)[i] = _as_double(v)
    elif kind == K_INT:
        (<int64_t*>col)[i] = _as_int64(v)
    elif kind == K_CODE:
        (<int32_t*>col)[i] = _code(v, index, values)
    else:
        (<uint8_t*>col)[i] = 1 if v is True else (0 if v is False else 255)

# ------------------------------------------------------------------------------ the row scanner
# Reads one row's JSON text and picks the schema's fields out of its top-level object without
# building any Python object but the coded columns' strings. It accepts only a strict subset of JSON
# and answers "ask orjson" (0) for anything else, so it never has to judge a corner of the grammar:
# a string with an escape, a control byte or a non-ASCII byte; an integer of more than 18 digits
# (orjson turns those past 64 bits into floats); a float that overflows or is over 63 characters;
# nesting deeper than MAX_DEPTH; a top level that is not an object. Everything it does accept is
# RFC 8259 JSON that orjson reads the same way (duplicate keys: the last one wins, as in a dict);
# floats are correctly rounded like orjson's: Clinger's exact fast path or std::from_chars (C++17).

cdef enum:
    T_NONE = 0  # absent or null
    T_INT = 1
    T_FLOAT = 2
    T_TRUE = 3
    T_FALSE = 4
    T_STR = 5
    T_NESTED = 6  # an object or an array

cdef enum:
    MAX_DEPTH = 64
    MAX_FIELDS = 64

ctypedef const unsigned char* cptr

cdef struct Val:
    int tag
    int64_t i
    double d
    cptr s
    Py_ssize_t n


cdef inline cptr _ws(cptr p, cptr end) noexcept nogil:
    while p < end and (p[0] == 32 or p[0] == 10 or p[0] == 13 or p[0] == 9):
        p += 1
    return p


cdef unsigned char _PLAIN[256]  # 1 for a byte a string in the subset may hold as it is
for _c in range(256):
    _PLAIN[_c] = 1 if 32 <= _c <= 126 and _c != 34 and _c != 92 else 0


cdef inline cptr _string(cptr p, cptr end) noexcept nogil:
    """p on the opening quote: the byte after the closing one, or NULL (not in the subset)."""
    p += 1
    while end - p >= 4 and _PLAIN[p[0]] & _PLAIN[p[1]] & _PLAIN[p[2]] & _PLAIN[p[3]]:
        p += 4
    while p < end and _PLAIN[p[0]]:
        p += 1
    if p < end and p[0] == 34:
        return p + 1
    return NULL


cdef inline bint _digit(cptr p, cptr end) noexcept nogil:
    return p < end and 48 <= p[0] <= 57


cdef double[23] _POW10 = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
]


cdef cptr _number(cptr p, cptr end, Val* v, bint want) noexcept:
    """A number at p: the byte after it, or NULL. With `want`, its value in v: an int of at most 18
    digits, or a finite double (Clinger's exact fast path when the digits fit in 2**53 and the power
    of ten in 22, else std::from_chars). Without `want` only what orjson checks: the syntax, and
    that the value is finite (a number of at most 63 characters without an exponent always is)."""
    cdef cptr start = p
    cdef bint neg = p[0] == 45, exp = False, eneg = False, lost = False
    cdef uint64_t w = 0
    cdef int ndig = 0, frac = 0, ex = 0, k
    cdef Py_ssize_t n
    cdef double d
    if neg:
        p += 1
    if not _digit(p, end):
        return NULL
    if p[0] == 48:
        p += 1
    else:
        while _digit(p, end):
            if ndig < 19:
                w = w * 10 + (p[0] - 48)
                ndig += 1
            else:
                lost = True
            p += 1
    if p < end and p[0] == 46:
        p += 1
        if not _digit(p, end):
            return NULL
        while _digit(p, end):
            if ndig < 19:
                w = w * 10 + (p[0] - 48)
                ndig += 1
                frac += 1
            else:
                lost = True
            p += 1
        exp = True  # a fraction: a float, like an exponent
    if p < end and (p[0] == 101 or p[0] == 69):
        p += 1
        if p < end and (p[0] == 43 or p[0] == 45):
            eneg = p[0] == 45
            p += 1
        if not _digit(p, end):
            return NULL
        while _digit(p, end):
            if ex < 100000:
                ex = ex * 10 + (p[0] - 48)
            p += 1
        exp = True
    n = p - start
    if n > 63:
        return NULL
    if not exp:
        if not want:
            return p
        if lost or ndig > 18:
            return NULL  # orjson reads ints past 64 bits as floats: let it
        v.tag, v.i = T_INT, -<int64_t>w if neg else <int64_t>w
        return p
    k = (-ex if eneg else ex) - frac
    if not lost and w <= 9007199254740992 and -22 <= k <= 22:
        d = <double>w
        d = d * _POW10[k] if k >= 0 else d / _POW10[-k]
        d = -d if neg else d
    elif not parse_double(<const char*>start, <const char*>p, &d):
        return NULL  # out of range (orjson: an error for infinities) or not parsed: let orjson decide
    if not isfinite(d):
        return NULL
    v.tag, v.d = T_FLOAT, d
    return p


cdef inline cptr _word(cptr p, cptr end, const char* word, Py_ssize_t n) noexcept nogil:
    if end - p >= n and memcmp(p, word, n) == 0:
        return p + n
    return NULL


cdef cptr _value(cptr p, cptr end, int depth, Val* v, bint want) noexcept:
    """One value at p (no leading space): the byte after it, or NULL; its type (and with `want` its
    scalar) in v."""
    cdef unsigned char c
    cdef cptr q
    if p >= end:
        return NULL
    c = p[0]
    if c == 34:
        q = _string(p, end)
        if q is not NULL:
            v.tag, v.s, v.n = T_STR, p + 1, q - p - 2
        return q
    if c == 45 or 48 <= c <= 57:
        return _number(p, end, v, want)
    if c == 116:
        v.tag = T_TRUE
        return _word(p, end, b"true", 4)
    if c == 102:
        v.tag = T_FALSE
        return _word(p, end, b"false", 5)
    if c == 110:
        v.tag = T_NONE
        return _word(p, end, b"null", 4)
    if c == 123 or c == 91:
        v.tag = T_NESTED
        return _nested(p, end, depth + 1)
    return NULL


cdef cptr _nested(cptr p, cptr end, int depth) noexcept:
    """An object or array at p, validated and skipped: the byte after it, or NULL."""
    cdef bint obj = p[0] == 123
    cdef unsigned char close = 125 if obj else 93
    cdef Val ignored
    if depth > MAX_DEPTH:
        return NULL
    p = _ws(p + 1, end)
    if p < end and p[0] == close:
        return p + 1
    while True:
        if obj:
            if p >= end or p[0] != 34:
                return NULL
            p = _string(p, end)
            if p is NULL:
                return NULL
            p = _ws(p, end)
            if p >= end or p[0] != 58:
                return NULL
            p = _ws(p + 1, end)
        p = _value(p, end, depth, &ignored, False)
        if p is NULL:
            return NULL
        p = _ws(p, end)
        if p >= end:
            return NULL
        if p[0] == close:
            return p + 1
        if p[0] != 44:
            return NULL
        p = _ws(p + 1, end)


cdef struct Name:
    const char* s
    Py_ssize_t n


cdef int _scan_row(cptr p, cptr end, Name* names, Py_ssize_t nf, Val* vals) noexcept:
    """The fields `names` of the row's top-level object into vals: 1, or 0 = ask orjson."""
    cdef Val v
    cdef cptr key
    cdef Py_ssize_t klen, j, hit
    for j in range(nf):
        vals[j].tag = T_NONE
    p = _ws(p, end)
    if p >= end or p[0] != 123:
        return 0
    p = _ws(p + 1, end)
    if p < end and p[0] == 125:
        return 1 if _ws(p + 1, end) == end else 0
    while True:
        if p >= end or p[0] != 34:
            return 0
        key = p + 1
        p = _string(p, end)
        if p is NULL:
            return 0
        klen = p - key - 1
        hit = -1
        for j in range(nf):
            if names[j].n == klen and memcmp(names[j].s, key, klen) == 0:
                hit = j
                break
        p = _ws(p, end)
        if p >= end or p[0] != 58:
            return 0
        p = _ws(p + 1, end)
        v.tag = T_NONE
        p = _value(p, end, 0, &v, hit >= 0)
        if p is NULL:
            return 0
        if hit >= 0:
            vals[hit] = v
        p = _ws(p, end)
        if p >= end:
            return 0
        if p[0] == 125:
            return 1 if _ws(p + 1, end) == end else 0
        if p[0] != 44:
            return 0
        p = _ws(p + 1, end)


cdef tuple _names(tuple fields, Name* out):
    """Point out[j] at the ASCII bytes of fields[j]; returns the bytes objects to keep alive."""
    cdef tuple keep = tuple([f.encode("ascii") for f in fields])
    cdef Py_ssize_t j
    for j in range(len(keep)):
        out[j].s = <const char*>(<bytes>keep[j])
        out[j].n = len(<bytes>keep[j])
    return keep


cdef struct LastCode:  # a coded column's last string and its code: rows repeat a few values
    Py_ssize_t n  # -1: none yet
    int32_t code
    char s[48]


cdef inline int32_t _scanned_code(Val* v, dict index, list values, LastCode* last):
    cdef int32_t code
    if last.n == v.n and memcmp(last.s, v.s, v.n) == 0:
        return last.code
    code = _code(PyUnicode_DecodeASCII(<const char*>v.s, v.n, NULL), index, values)
    if v.n <= 48:
        memcpy(last.s, v.s, v.n)
        last.n, last.code = v.n, code
    return code


cdef inline void _put_scanned(
    int kind, char* col, Py_ssize_t i, Val* v, dict index, list values, LastCode* last
):
    cdef int tag = v.tag
    cdef double x
    if kind == K_FLOAT:
        if tag == T_FLOAT:
            x = v.d
        elif tag == T_INT:
            x = <double>v.i
        elif tag == T_TRUE or tag == T_FALSE:
            x = 1.0 if tag == T_TRUE else 0.0
        else:
            x = NAN
        (<double*>col)[i] = x
    elif kind == K_INT:
        if tag == T_INT:
            (<int64_t*>col)[i] = v.i
        elif tag == T_TRUE or tag == T_FALSE:
            (<int64_t*>col)[i] = 1 if tag == T_TRUE else 0
        elif tag == T_FLOAT and floor(v.d) == v.d and -TWO63 < v.d < TWO63:
            (<int64_t*>col)[i] = <int64_t>v.d
        else:
            (<int64_t*>col)[i] = INT64_MIN
    elif kind == K_CODE:
        if tag == T_STR:
            (<int32_t*>col)[i] = _scanned_code(v, index, values, last)
        else:
            (<int32_t*>col)[i] = -1
    else:
        (<uint8_t*>col)[i] = 1 if tag == T_TRUE else (0 if tag == T_FALSE else 255)


def decode_rows(
    object cursor,
    Py_ssize_t n,
    object loads,
    object decode_error,
    tuple fields,
    bytes kinds,
    list columns,
    list indexes,
    list values,
):
    """Decode up to `n` rows from `cursor` (an lmdb.Cursor on the first row) into `columns`.

    fields[j] is read from each row into columns[j][i] (a C-contiguous numpy array of the kind's
    dtype, length >= n) as kinds[j] (KIND_CODES) says; a code column uses the dictionary
    indexes[j] / values[j] (None for other kinds). `loads` decodes a row buffer and raises
    `decode_error` for a row that is not JSON. Stops after the cursor's last row; returns the number
    of rows decoded.
    """
    cdef Py_ssize_t nf = len(fields), i, j, done = 0
    cdef const unsigned char* kind = kinds
    cdef char** cols
    cdef Val* vals
    cdef PyObject* item
    cdef Py_buffer view
    cdef int scanned
    cdef object row, v, buf
    cdef Name names[MAX_FIELDS]
    cdef LastCode cache[MAX_FIELDS]
    cdef tuple _alive
    if len(kinds) != nf or len(columns) != nf or len(indexes) != nf or len(values) != nf:
        raise ValueError("fields, kinds, columns, indexes and values must have the same length")
    if nf > MAX_FIELDS:
        raise ValueError(f"at most {MAX_FIELDS} fields, got {nf}")
    _alive = _names(fields, names)  # the bytes names[] points into
    for j in range(nf):
        arr = columns[j]
        if not isinstance(arr, cnp.ndarray) or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
            raise ValueError(f"column {j} is not a C-contiguous numpy array")
        if kind[j] > K_BOOL or arr.dtype != _DTYPES[kind[j]] or arr.shape[0] < n:
            raise ValueError(f"column {j}: want {_DTYPES.get(kind[j])} of length >= {n}")
        if kind[j] == K_CODE and (type(indexes[j]) is not dict or type(values[j]) is not list):
            raise ValueError(f"column {j} is coded: it needs a dict index and a list of values")
    cols = <char**>malloc(nf * sizeof(char*) + 1)
    vals = <Val*>malloc(nf * sizeof(Val) + 1)
    if cols is NULL or vals is NULL:
        free(cols)
        free(vals)
        raise MemoryError()
    try:
        for j in range(nf):
            cols[j] = <char*>cnp.PyArray_DATA(columns[j])
            cache[j].n = -1
        i = 0
        while i < n:
            buf = cursor.value()
            PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
            try:
                scanned = _scan_row(<cptr>view.buf, <cptr>view.buf + view.len, names, nf, vals)
                if scanned:
                    for j in range(nf):
                        _put_scanned(kind[j], cols[j], i, &vals[j], indexes[j], values[j], &cache[j])
            finally:
                PyBuffer_Release(&view)
            if not scanned:
                try:
                    row = loads(buf)
                except decode_error:
                    row = None
                if type(row) is dict:
                    for j in range(nf):
                        item = PyDict_GetItem(row, fields[j])
                        v = None if item is NULL else <object>item
                        _put(kind[j], cols[j], i, v, indexes[j], values[j])
                else:
                    for j in range(nf):
                        _put(kind[j], cols[j], i, None, None, None)
            i += 1
            if not cursor.next():
                break
        done = i
    finally:
        free(cols)
        free(vals)
    return done


def scan_fields(object buf, tuple fields):
    """The scanner alone (for tests): the fields' values of the row `buf` as orjson would give them
    (a nested object or array as the placeholder NESTED), or None when the scanner defers to orjson."""
    cdef Py_ssize_t nf = len(fields), j
    cdef Val vals[MAX_FIELDS]
    cdef Py_buffer view
    cdef int ok
    cdef list out = []
    cdef Name names[MAX_FIELDS]
    if nf > MAX_FIELDS:
        raise ValueError(f"at most {MAX_FIELDS} fields, got {nf}")
    _alive = _names(fields, names)  # the bytes names[] points into
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        ok = _scan_row(<cptr>view.buf, <cptr>view.buf + view.len, names, nf, vals)
        if not ok:
            return None
        for j in range(nf):
            tag = vals[j].tag
            if tag == T_INT:
                out.append(vals[j].i)
            elif tag == T_FLOAT:
                out.append(vals[j].d)
            elif tag == T_TRUE or tag == T_FALSE:
                out.append(tag == T_TRUE)
            elif tag == T_STR:
                out.append(PyUnicode_DecodeASCII(<const char*>vals[j].s, vals[j].n, NULL))
            elif tag == T_NESTED:
                out.append(NESTED)
            else:
                out.append(None)
    finally:
        PyBuffer_Release(&view)
    return tuple(out)


NESTED = object()
