"""Native LRU cache with a default and a per-entry TTL (compiled as engine._cache).

Layout, and why it is fast
--------------------------
* A dict maps key -> slot; the slot is a preallocated int object (`_slot_objs`), so a put
  allocates no Python object. The rest is two C arrays that start tiny and double up to maxsize+1:
  - `_nodes`: 56-byte `Node` structs (owned key and value pointers, expiry, access count, int32
    links). Slot 0 is the sentinel of two circular doubly linked lists: the LRU list
    (`nodes[0].next` is the least recently used entry, `nodes[0].prev` the most recent) and the
    expiry list, sorted by expiry. Free slots are chained through `next`.
  - `_heap`: a binary min-heap of (expires, slot), each node knowing its position.
  An entry that can expire is appended to the expiry list when it expires no earlier than the
  list's last entry, which is always the case with one ttl and a monotonic clock: O(1). Only an
  entry that would break the order (a shorter per-entry ttl, a timer that went back) goes to the
  heap, O(log n). The next entry to expire is the earlier of the list's head and the heap's top.
* A get-hit is one dict lookup, one clock read, a few stores to relink the node at the MRU end
  and three counter increments: no allocation. A put of a new key into a full cache is three
  dict operations, one clock read and O(1) list work. Methods are built with binding=False so that
  `cache.get` is a plain builtin method; as a cyfunction each call cost 20 ns more.
* Clock: with `timer is time.monotonic` (Linux) the clock is read in C. A put reads
  CLOCK_MONOTONIC (what time.monotonic reads, same formula). A get first reads
  CLOCK_MONOTONIC_COARSE, which is never ahead of CLOCK_MONOTONIC and trails it by a few timer
  ticks: while coarse + _COARSE_SLACK (1 s) is before the entry's expiry the entry is alive, so
  only entries in their last second pay for the precise clock (35 ns here, the coarse one 10 ns,
  and it overlaps the dict lookup). An injected timer is called once per operation, first.
* get() does not remove an expired entry: it is a miss, and the entry is purged (counted in
  `expirations`) by the next put of a new key, expire(), len(), currsize, stats(), popitem() or a
  removal of that key. Every entry expires once, so purging is amortised O(1) per entry (O(log n)
  for the ones in the heap).
* stats() is O(1): each counter, total_accesses included, is kept as it changes.

Threads: what this relies on
----------------------------
The module is built with the GIL (freethreading_compatible=False). C code that holds the GIL and
runs no Python code is atomic, so each operation is "read, decide, mutate" with no Python code
in between, and the objects it takes out (old values, evicted or expired keys and values) are
released only once the cache is consistent again, since releasing may run a __del__. Python code
could otherwise run inside an operation in four ways, each handled:
1. an injected timer: called before the cache is touched;
2. a key whose __hash__/__eq__ is Python code (anything but exact str, int, float, bytes, bool,
   None, and tuples of those): operations on such a key, and every operation once one is stored
   (until clear()), hold a lock owned by the cache, and lock-free operations first check that
   nobody holds it. A key's __eq__ calling back into the same cache raises RuntimeError;
3. the cyclic GC, which Python 3.11 may start on any allocation of a GC-tracked object: none is
   allocated between an operation's first read and its last write;
4. releasing objects: deferred, as said above.
"""

cimport cython
from cpython.dict cimport PyDict_Clear, PyDict_DelItem, PyDict_GetItemWithError, PyDict_SetItem
from cpython.exc cimport PyErr_Clear
from cpython.list cimport PyList_GET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.pythread cimport (NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
                               PyThread_free_lock, PyThread_get_thread_ident, PyThread_release_lock,
                               PyThread_type_lock)
from libc.math cimport INFINITY, isnan
from libc.stdint cimport int32_t, int64_t

import operator
from time import monotonic
from collections.abc import ItemsView, KeysView, Mapping, MutableMapping, ValuesView
from numbers import Real

from engine.errors import ValidationError


cdef extern from "Python.h":
    # reference counting on raw pointers (cpython.ref declares these on `object`)
    void _incref "Py_INCREF"(PyObject*) noexcept
    void _decref "Py_DECREF"(PyObject*) noexcept
    void _xdecref "Py_XDECREF"(PyObject*) noexcept


cdef extern from *:
    """
    #if defined(__linux__)
    #include <time.h>
    #define ENGINE_NATIVE_CLOCK 1
    static inline double engine_ts_seconds(const struct timespec *ts) {
        /* time.monotonic()'s formula: integer nanoseconds, then / 1e9 */
        return (double)((long long)ts->tv_sec * 1000000000LL + (long long)ts->tv_nsec) / 1e9;
    }
    static inline double engine_clock_precise(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return engine_ts_seconds(&ts);
    }
    static inline double engine_clock_coarse(void) {
    #ifdef CLOCK_MONOTONIC_COARSE
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        return engine_ts_seconds(&ts);
    #else
        return engine_clock_precise();
    #endif
    }
    #else
    #define ENGINE_NATIVE_CLOCK 0
    static inline double engine_clock_precise(void) { return 0.0; }
    static inline double engine_clock_coarse(void) { return 0.0; }
    #endif
    """
    const int ENGINE_NATIVE_CLOCK
    double engine_clock_precise() noexcept nogil
    double engine_clock_coarse() noexcept nogil


cdef double _COARSE_SLACK = 1.0  # bound on how far CLOCK_MONOTONIC_COARSE trails CLOCK_MONOTONIC
cdef Py_ssize_t _MAX_MAXSIZE = 2**31 - 2  # slots are int32
cdef enum:
    _UNTRACKED = -1, _IN_LIST = -2  # Node.heap_pos when not in the heap
    _KEYS = 0, _VALUES, _ITEMS      # what _snapshot returns
cdef enum:  # operations of LRUCache._run; from _OP_SET on they may purge expired entries
    _OP_GET, _OP_PEEK, _OP_TAKE, _OP_SET, _OP_SETDEFAULT, _OP_POPITEM, _OP_PURGE

cdef object _UNSET = object()
cdef object _MISSING = object()
cdef object _MONOTONIC = monotonic


cdef struct Node:
    PyObject* key       # owned; NULL for a free slot
    PyObject* value     # owned
    double expires      # INFINITY: never expires
    int64_t accesses    # hits served by this entry since it was put
    int32_t prev        # LRU list
    int32_t next
    int32_t eprev       # expiry list (when heap_pos == _IN_LIST)
    int32_t enext
    int32_t heap_pos    # >= 0: position in the heap; _IN_LIST; _UNTRACKED: never expires


cdef struct HeapEntry:
    double expires
    int32_t slot


cdef struct Displaced:
    # references an operation took out of the cache, released once it is consistent again
    PyObject* key
    PyObject* value
    PyObject* old_value


cdef bint _is_simple_slow(object key, int depth) noexcept:
    cdef type t = type(key)
    if t is str or t is int or t is bytes or t is float or t is bool or key is None:
        return True
    if t is tuple and depth < 4:
        for item in <tuple>key:
            if not _is_simple_slow(item, depth + 1):
                return False
        return True
    return False


cdef inline bint _is_simple(object key) noexcept:
    """True when hashing and comparing `key` runs no Python code."""
    return type(key) is str or _is_simple_slow(key, 0)


cdef inline bint _alive_native(double expires) noexcept nogil:
    return (
        expires == INFINITY
        or engine_clock_coarse() + _COARSE_SLACK < expires
        or engine_clock_precise() < expires
    )


cdef double _parse_ttl(object ttl) except? -1.0:
    """Seconds as a double; INFINITY when the entry must never expire (None or 0)."""
    cdef double secs
    if ttl is None:
        return INFINITY
    if type(ttl) is float or type(ttl) is int:
        secs = ttl
    elif isinstance(ttl, bool) or not isinstance(ttl, Real):
        raise ValidationError(f"ttl must be a number of seconds or None, got {type(ttl).__name__}")
    else:
        secs = float(ttl)
    if isnan(secs) or secs < 0:
        raise ValidationError(f"ttl must be >= 0 seconds (0 or None: never expires), got {ttl!r}")
    return INFINITY if secs == 0 else secs


cdef Py_ssize_t _parse_maxsize(object maxsize) except -1:
    if isinstance(maxsize, bool):
        raise ValidationError("maxsize must be an int, got bool")
    try:
        size = operator.index(maxsize)
    except TypeError:
        raise ValidationError(f"maxsize must be an int, got {type(maxsize).__name__}") from None
    if size < 0 or size > _MAX_MAXSIZE:
        raise ValidationError(f"maxsize must be between 0 and {_MAX_MAXSIZE}, got {size}")
    return size


class _ItemsView(ItemsView):
    """items() that neither counts hits nor refreshes recency."""

    __slots__ = ()

    def __contains__(self, item):
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        key, value = item
        found = self._mapping.peek(key, _MISSING)
        return found is not _MISSING and (found is value or found == value)

    def __iter__(self):
        return iter(self._mapping._snapshot(_ITEMS))


class _ValuesView(ValuesView):
    """values() that neither counts hits nor refreshes recency."""

    __slots__ = ()

    def __contains__(self, value):
        return any(v is value or v == value for v in self._mapping._snapshot(_VALUES))

    def __iter__(self):
        return iter(self._mapping._snapshot(_VALUES))


@cython.final
@cython.no_gc_clear
cdef class LRUCache:
    """LRU cache with a default TTL and a per-entry TTL; a MutableMapping like cachetools.TTLCache.

    LRUCache(maxsize=1000, ttl=3600.0, *, timer=time.monotonic); the old names max_size= and
    default_ttl= are accepted too. ttl=None or 0: entries never expire unless put() gives them a
    ttl. An entry put at time t with ttl s is alive while timer() < t + s. Final: wrap it rather
    than subclass it (the fast paths are direct C calls).
    """

    cdef dict _index
    cdef list _slot_objs
    cdef object __weakref__
    cdef Node* _nodes
    cdef HeapEntry* _heap
    cdef Py_ssize_t _cap, _size, _heap_len, _maxsize
    cdef int32_t _hi, _free
    cdef double _ttl
    cdef object _timer, _pytimer
    cdef bint _fast, _locked_mode
    cdef unsigned long _owner
    cdef PyThread_type_lock _lock
    cdef int64_t _hits, _misses, _evictions, _expirations, _total_accesses

    def __cinit__(self, *args, **kwargs):
        self._index = {}
        self._slot_objs = [0]
        self._lock = PyThread_allocate_lock()
        self._nodes = <Node*>PyMem_Malloc(sizeof(Node))
        self._heap = <HeapEntry*>PyMem_Malloc(sizeof(HeapEntry))
        if self._lock == NULL or self._nodes == NULL or self._heap == NULL:
            raise MemoryError()
        self._init_arrays()
        self._ttl = INFINITY
        self._timer = _MONOTONIC
        self._pytimer = None if ENGINE_NATIVE_CLOCK else _MONOTONIC
        self._fast = ENGINE_NATIVE_CLOCK

    def __init__(self, maxsize=_UNSET, ttl=_UNSET, *, timer=_MONOTONIC, max_size=_UNSET,
                 default_ttl=_UNSET):
        if max_size is not _UNSET:
            if maxsize is not _UNSET:
                raise TypeError("give maxsize or max_size, not both")
            maxsize = max_size
        if default_ttl is not _UNSET:
            if ttl is not _UNSET:
                raise TypeError("give ttl or default_ttl, not both")
            ttl = default_ttl
        timer = _MONOTONIC if timer is None else timer
        if not callable(timer):
            raise ValidationError(f"timer must be callable, got {type(timer).__name__}")
        cdef Py_ssize_t size = _parse_maxsize(1000 if maxsize is _UNSET else maxsize)
        cdef double secs = _parse_ttl(3600.0 if ttl is _UNSET else ttl)
        self.clear()
        self._maxsize = size
        self._ttl = secs
        self._timer = timer
        self._pytimer = None if (timer is _MONOTONIC and ENGINE_NATIVE_CLOCK) else timer
        self._fast = self._pytimer is None

    def __dealloc__(self):
        _release_nodes(self._nodes, self._hi)
        PyMem_Free(self._nodes)
        PyMem_Free(self._heap)
        if self._lock != NULL:
            PyThread_free_lock(self._lock)

    # ---------------------------------------------------------------- internals: structure

    cdef void _init_arrays(self) noexcept:
        self._cap = 1
        self._hi = 1
        self._free = -1
        self._size = 0
        self._heap_len = 0
        self._total_accesses = 0
        self._nodes[0] = Node(key=NULL, value=NULL, expires=INFINITY, accesses=0, prev=0, next=0,
                              eprev=0, enext=0, heap_pos=_UNTRACKED)

    cdef int _reserve(self) except -1:
        """Make sure a slot is free for one more entry (the caller evicted when full)."""
        cdef Py_ssize_t i, new_cap = min(max(self._cap * 2, 8), self._maxsize + 1)
        cdef Node* nodes
        cdef HeapEntry* heap
        if self._free > 0 or self._hi < self._cap:
            return 0
        nodes = <Node*>PyMem_Realloc(self._nodes, new_cap * sizeof(Node))
        if nodes == NULL:
            raise MemoryError()
        self._nodes = nodes
        heap = <HeapEntry*>PyMem_Realloc(self._heap, new_cap * sizeof(HeapEntry))
        if heap == NULL:
            raise MemoryError()
        self._heap = heap
        for i in range(len(self._slot_objs), new_cap):
            self._slot_objs.append(i)
        self._cap = new_cap
        return 0

    cdef inline void _move_to_mru(self, int32_t i) noexcept:
        cdef Node* nodes = self._nodes
        cdef int32_t last = nodes[0].prev
        if nodes[i].next == 0:
            return
        nodes[nodes[i].prev].next = nodes[i].next
        nodes[nodes[i].next].prev = nodes[i].prev
        nodes[i].prev = last
        nodes[i].next = 0
        nodes[last].next = i
        nodes[0].prev = i

    cdef inline void _hit(self, int32_t i) noexcept:
        self._move_to_mru(i)
        self._nodes[i].accesses += 1
        self._total_accesses += 1
        self._hits += 1

    cdef inline void _heap_set(self, Py_ssize_t pos, HeapEntry e) noexcept:
        self._heap[pos] = e
        self._nodes[e.slot].heap_pos = <int32_t>pos

    cdef void _sift_up(self, Py_ssize_t pos) noexcept:
        cdef HeapEntry e = self._heap[pos]
        cdef Py_ssize_t parent
        while pos > 0:
            parent = (pos - 1) >> 1
            if self._heap[parent].expires <= e.expires:
                break
            self._heap_set(pos, self._heap[parent])
            pos = parent
        self._heap_set(pos, e)

    cdef void _sift_down(self, Py_ssize_t pos) noexcept:
        cdef HeapEntry e = self._heap[pos]
        cdef Py_ssize_t child
        while True:
            child = 2 * pos + 1
            if child >= self._heap_len:
                break
            if child + 1 < self._heap_len and self._heap[child + 1].expires < self._heap[child].expires:
                child += 1
            if e.expires <= self._heap[child].expires:
                break
            self._heap_set(pos, self._heap[child])
            pos = child
        self._heap_set(pos, e)

    cdef void _heap_remove(self, Py_ssize_t pos) noexcept:
        cdef int32_t moved
        self._heap_len -= 1
        if pos < self._heap_len:
            moved = self._heap[self._heap_len].slot
            self._heap_set(pos, self._heap[self._heap_len])
            self._sift_down(pos)
            self._sift_up(self._nodes[moved].heap_pos)

    cdef void _track(self, int32_t slot) noexcept:
        """Index an untracked entry by expiry: appended to the sorted expiry list when it expires
        no earlier than the list's last entry (always, with one ttl and a monotonic clock), else
        pushed on the heap."""
        cdef Node* nodes = self._nodes
        cdef int32_t last = nodes[0].eprev
        if nodes[slot].expires == INFINITY:
            nodes[slot].heap_pos = _UNTRACKED
        elif last == 0 or nodes[last].expires <= nodes[slot].expires:
            nodes[slot].heap_pos = _IN_LIST
            nodes[slot].eprev = last
            nodes[slot].enext = 0
            nodes[last].enext = slot
            nodes[0].eprev = slot
        else:
            self._heap_len += 1
            self._heap_set(self._heap_len - 1, HeapEntry(expires=nodes[slot].expires, slot=slot))
            self._sift_up(self._heap_len - 1)

    cdef void _untrack(self, int32_t slot) noexcept:
        cdef Node* n = &self._nodes[slot]
        if n.heap_pos == _IN_LIST:
            self._nodes[n.eprev].enext = n.enext
            self._nodes[n.enext].eprev = n.eprev
        elif n.heap_pos >= 0:
            self._heap_remove(n.heap_pos)
        n.heap_pos = _UNTRACKED

    cdef int32_t _next_due(self, double now) noexcept:
        """The slot of an entry with expires <= now (the earliest one), or 0."""
        cdef int32_t slot = self._nodes[0].enext
        if self._heap_len > 0 and (slot == 0 or self._heap[0].expires < self._nodes[slot].expires):
            slot = self._heap[0].slot
        return slot if slot != 0 and self._nodes[slot].expires <= now else 0

    cdef int32_t _find(self, object key) except -2:
        """Slot of `key`, or -1. May run the key's Python __eq__ (the caller then holds the lock)."""
        cdef PyObject* p = PyDict_GetItemWithError(self._index, key)
        return -1 if p == NULL else <int32_t><object>p

    cdef int _detach(self, int32_t slot, PyObject** out_key, PyObject** out_value) except -1:
        """Unlink entry `slot` everywhere; its key and value references move to the out pointers."""
        PyDict_DelItem(self._index, <object>self._nodes[slot].key)  # may fail: nothing changed yet
        cdef Node* n = &self._nodes[slot]
        self._nodes[n.prev].next = n.next
        self._nodes[n.next].prev = n.prev
        self._untrack(slot)
        out_key[0] = n.key
        out_value[0] = n.value
        n.key = NULL
        n.value = NULL
        self._size -= 1
        self._total_accesses -= n.accesses
        n.prev = -1
        n.next = self._free
        self._free = slot
        return 0

    cdef int _expire_into(self, double now, list out) except -1:
        """Remove every entry with expires <= now; their keys and values are appended to `out`."""
        cdef int32_t slot
        cdef PyObject* k
        cdef PyObject* v
        while True:
            slot = self._next_due(now)
            if slot == 0:
                return 0
            out.append(<object>self._nodes[slot].key)
            out.append(<object>self._nodes[slot].value)
            self._detach(slot, &k, &v)
            _decref(k)  # `out` holds both
            _decref(v)
            self._expirations += 1

    cdef inline bint _due(self, double now) noexcept:
        return self._next_due(now) != 0

    cdef PyObject* _lookup(self, object key, double now, bint touch) except? NULL:
        """Borrowed value of a live entry, or NULL; counts a hit or a miss when `touch`."""
        cdef int32_t slot = self._find(key)
        if slot < 0 or not (now < self._nodes[slot].expires):
            self._misses += touch
            return NULL
        if touch:
            self._hit(slot)
        return self._nodes[slot].value

    cdef int _put_core(self, object key, object value, double expires, double now, list sink,
                       Displaced* d) except -1:
        cdef int32_t slot = self._find(key)
        cdef Node* n
        if slot >= 0:
            n = &self._nodes[slot]
            d.old_value = n.value
            _incref(<PyObject*>value)
            n.value = <PyObject*>value
            self._total_accesses -= n.accesses
            n.accesses = 0
            self._untrack(slot)
            n.expires = expires
            self._track(slot)
            self._move_to_mru(slot)
            return 0
        if self._maxsize == 0:
            return 0
        if sink is not None:
            self._expire_into(now, sink)
        if self._size >= self._maxsize:
            self._detach(self._nodes[0].next, &d.key, &d.value)
            self._evictions += 1
        self._reserve()
        slot = self._free if self._free > 0 else self._hi
        PyDict_SetItem(self._index, key, <object>PyList_GET_ITEM(self._slot_objs, slot))
        n = &self._nodes[slot]
        if slot == self._free:
            self._free = n.next
        else:
            self._hi += 1
        _incref(<PyObject*>key)
        _incref(<PyObject*>value)
        n[0] = Node(key=<PyObject*>key, value=<PyObject*>value, expires=expires, accesses=0,
                    prev=self._nodes[0].prev, next=0, eprev=0, enext=0, heap_pos=_UNTRACKED)
        self._nodes[n.prev].next = slot
        self._nodes[0].prev = slot
        self._size += 1
        self._track(slot)
        if not _is_simple(key):
            self._locked_mode = True
            self._fast = False
        return 0

    cdef int _swap_out(self, Node** old_nodes, int32_t* old_hi) except -1:
        """Empty the cache; the old node array, still owning its references, goes to the caller."""
        cdef Node* nodes = <Node*>PyMem_Malloc(sizeof(Node))
        cdef HeapEntry* heap = <HeapEntry*>PyMem_Malloc(sizeof(HeapEntry))
        if nodes == NULL or heap == NULL:
            PyMem_Free(nodes)
            PyMem_Free(heap)
            raise MemoryError()
        PyDict_Clear(self._index)  # the nodes still own every key: this releases nothing
        old_nodes[0] = self._nodes
        old_hi[0] = self._hi
        PyMem_Free(self._heap)
        self._nodes = nodes
        self._heap = heap
        self._init_arrays()
        del self._slot_objs[1:]
        self._locked_mode = False
        self._fast = self._pytimer is None
        return 0

    # ---------------------------------------------------------------- internals: time, lock, paths

    cdef double _now(self) except? -1.0:
        return engine_clock_precise() if self._pytimer is None else float(self._pytimer())

    cdef inline bint _needs_lock(self, object key) noexcept:
        return self._locked_mode or self._owner != 0 or not _is_simple(key)

    cdef int _acquire(self) except -1:
        cdef unsigned long me = <unsigned long>PyThread_get_thread_ident()
        if self._owner == me:
            raise RuntimeError("LRUCache was called back from inside one of its own operations "
                               "(a key's __hash__/__eq__ used the same cache)")
        if not PyThread_acquire_lock(self._lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self._lock, WAIT_LOCK)
        self._owner = me
        return 0

    cdef object _run(self, int op, object key, object value, double secs, double now):
        """One operation on the general path: lock when needed, release what it took out last."""
        cdef Displaced d = Displaced(key=NULL, value=NULL, old_value=NULL)
        cdef bint lock = self._needs_lock(key)
        cdef list sink = None
        cdef PyObject* p
        cdef int32_t slot
        cdef bint taken = False
        result = _MISSING
        if lock:
            self._acquire()
        try:
            if op == _OP_POPITEM or op >= _OP_SET and self._due(now):
                sink = []  # allocated before the first read (see the note on the GC)
            if op == _OP_GET or op == _OP_PEEK or op == _OP_SETDEFAULT:
                p = self._lookup(key, now, op != _OP_PEEK)
                if p != NULL:
                    result = <object>p
                elif op == _OP_SETDEFAULT:
                    result = value
                    self._put_core(key, value, now + secs, now, sink, &d)
            elif op == _OP_SET:
                self._put_core(key, value, now + secs, now, sink, &d)
            elif op == _OP_TAKE:
                slot = self._find(key)
                if slot >= 0:
                    taken = now < self._nodes[slot].expires
                    self._expirations += not taken
                    self._detach(slot, &d.key, &d.value)
            elif sink is not None:  # _OP_POPITEM, _OP_PURGE
                self._expire_into(now, sink)
                if op == _OP_POPITEM and self._size:
                    self._detach(self._nodes[0].next, &d.key, &d.value)
                    taken = True
        finally:
            if lock:
                self._owner = 0
                PyThread_release_lock(self._lock)
        try:
            if taken:  # the cache is consistent again: objects may be created (and freed)
                result = <object>d.value if op == _OP_TAKE else (<object>d.key, <object>d.value)
            elif op == _OP_PURGE:
                result = sink
        finally:
            _xdecref(d.key)
            _xdecref(d.value)
            _xdecref(d.old_value)
        return result

    cdef inline object _read(self, object key, object default, bint touch):
        cdef PyObject* p
        cdef int32_t slot
        if self._fast and self._owner == 0 and _is_simple(key):
            p = PyDict_GetItemWithError(self._index, key)
            if p != NULL:
                slot = <int32_t><object>p
                if _alive_native(self._nodes[slot].expires):
                    if touch:
                        self._hit(slot)
                    return <object>self._nodes[slot].value
            self._misses += touch
            return default
        result = self._run(_OP_GET if touch else _OP_PEEK, key, None, 0.0, self._now())
        return default if result is _MISSING else result

    cdef int _write(self, object key, object value, double secs) except -1:
        cdef Displaced d = Displaced(key=NULL, value=NULL, old_value=NULL)
        cdef double now = 0.0  # not needed when nothing can expire
        cdef list sink = None
        if not (self._fast and self._owner == 0 and _is_simple(key)):
            self._run(_OP_SET, key, value, secs, self._now())
            return 0
        if secs != INFINITY or self._nodes[0].enext != 0 or self._heap_len > 0:
            now = engine_clock_precise()
            if self._due(now):
                sink = []  # allocated before the first read (see the note on the GC)
        try:
            self._put_core(key, value, now + secs, now, sink, &d)
        finally:
            _xdecref(d.key)
            _xdecref(d.value)
            _xdecref(d.old_value)
        return 0

    cdef list _purge(self, double now):
        return self._run(_OP_PURGE, None, None, 0.0, now)

    # ---------------------------------------------------------------- the cachetools contract

    def __getitem__(self, key):
        value = self._read(key, _MISSING, True)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value):
        self._write(key, value, self._ttl)

    def __delitem__(self, key):
        if self._run(_OP_TAKE, key, None, 0.0, self._now()) is _MISSING:
            raise KeyError(key)

    def __contains__(self, key):
        return self._read(key, _MISSING, False) is not _MISSING

    def __len__(self):
        self._purge(self._now())
        return self._size

    def __iter__(self):
        return iter(self._snapshot(_KEYS))

    def __repr__(self):
        return f"LRUCache(maxsize={self._maxsize}, ttl={self.ttl!r}, currsize={len(self)})"

    def __eq__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self._snapshot(_ITEMS)) == dict(other.items())

    __hash__ = None

    def get(self, key, default=None):
        """The value of a live entry, else `default`; counts a hit or a miss (a cached None is a hit)."""
        return self._read(key, default, True)

    def peek(self, key, default=None):
        """Like get() but counts nothing and leaves the entry's recency alone."""
        return self._read(key, default, False)

    def put(self, key, value, ttl=None):
        """Store `value` for ttl seconds (None: the cache's ttl; 0: never expires). When the cache is
        full, expired entries are purged first, then the least recently used entry is evicted."""
        self._write(key, value, self._ttl if ttl is None else _parse_ttl(ttl))

    def invalidate(self, key):
        """Remove `key`; True when a live entry was removed."""
        return self._run(_OP_TAKE, key, None, 0.0, self._now()) is not _MISSING

    def pop(self, key, default=_MISSING):
        """Remove `key` and return its value; `default` (or KeyError) when absent or expired."""
        value = self._run(_OP_TAKE, key, None, 0.0, self._now())
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return value

    def popitem(self):
        """Remove and return the least recently used live (key, value); KeyError when empty."""
        item = self._run(_OP_POPITEM, None, None, 0.0, self._now())
        if item is _MISSING:
            raise KeyError("popitem(): LRUCache is empty")
        return item

    def setdefault(self, key, default=None):
        """get(key) when live (a hit), else put(key, default) (a miss) and return default."""
        return self._run(_OP_SETDEFAULT, key, default, self._ttl, self._now())

    def update(self, other=(), /, **kwargs):
        """Put every item of a mapping (or of an iterable of pairs), then the keyword items."""
        if isinstance(other, Mapping) or hasattr(other, "keys"):
            other = [(key, other[key]) for key in other.keys()]
        for key, value in other:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def keys(self):
        """A view of the live keys, least recently used first."""
        return KeysView(self)

    def values(self):
        """A view of the live values; iterating it counts no hits."""
        return _ValuesView(self)

    def items(self):
        """A view of the live (key, value) pairs; iterating it counts no hits."""
        return _ItemsView(self)

    def clear(self):
        """Remove every entry. The hit, miss, eviction and expiration counters are kept."""
        cdef Node* old_nodes = NULL
        cdef int32_t old_hi = 0
        cdef bint lock = self._needs_lock(None)
        if lock:
            self._acquire()
        try:
            self._swap_out(&old_nodes, &old_hi)
        finally:
            if lock:
                self._owner = 0
                PyThread_release_lock(self._lock)
        _release_nodes(old_nodes, old_hi)
        PyMem_Free(old_nodes)

    def expire(self, time=None):
        """Remove the entries expired at `time` (default: now); returns them as (key, value) pairs."""
        out = self._purge(self._now() if time is None else float(time))
        return [] if out is None else list(zip(out[::2], out[1::2]))

    def cleanup_expired(self):
        """Remove expired entries and return how many (the old layer's name for expire())."""
        out = self._purge(self._now())
        return 0 if out is None else len(out) // 2

    def stats(self):
        """Counters, O(1): hits, misses, evictions, expirations, size, max_size, hit_rate,
        total_accesses (hits served by the entries now cached) and avg_accesses (per entry)."""
        self._purge(self._now())
        cdef int64_t hits = self._hits, misses = self._misses, total = self._total_accesses
        cdef int64_t evictions = self._evictions, expirations = self._expirations
        cdef Py_ssize_t size = self._size
        return {
            "hits": hits,
            "misses": misses,
            "evictions": evictions,
            "expirations": expirations,
            "size": size,
            "max_size": self._maxsize,
            "hit_rate": hits / <double>(hits + misses) if hits + misses else 0.0,
            "total_accesses": total,
            "avg_accesses": total / <double>size if size else 0.0,
        }

    @property
    def maxsize(self):
        """The most entries the cache holds."""
        return self._maxsize

    @property
    def currsize(self):
        """Live entries now (expired ones are purged first)."""
        return len(self)

    @property
    def ttl(self):
        """Default seconds an entry lives; None when entries do not expire by default."""
        return None if self._ttl == INFINITY else self._ttl

    @property
    def timer(self):
        """The clock: time.monotonic (read in C) unless another was injected."""
        return self._timer

    def _snapshot(self, int kind):
        """Live keys, values or (key, value) pairs, least recently used first; counts nothing."""
        cdef double now = self._now()
        cdef list out = []
        cdef int32_t i = self._nodes[0].next
        while i != 0:
            if now < self._nodes[i].expires:
                if kind != _VALUES:
                    out.append(<object>self._nodes[i].key)
                if kind != _KEYS:
                    out.append(<object>self._nodes[i].value)
            i = self._nodes[i].next
        return list(zip(out[::2], out[1::2])) if kind == _ITEMS else out

    def _check(self):
        """Verify every internal invariant (for tests); raises AssertionError."""
        cdef int32_t i = self._nodes[0].next, prev = 0
        cdef Py_ssize_t pos, count = 0, expiring = 0
        cdef int64_t accesses = 0
        while i != 0:
            n = &self._nodes[i]
            assert 0 < i < self._hi and n.prev == prev and n.key != NULL, f"bad link at slot {i}"
            assert self._index.get(<object>n.key) == i, f"the dict does not map slot {i}"
            assert (n.heap_pos != _UNTRACKED) == (n.expires != INFINITY), f"slot {i}: not indexed"
            accesses += n.accesses
            expiring += n.expires != INFINITY
            count += 1
            assert count <= self._size, "the LRU list is longer than size"
            prev, i = i, n.next
        assert self._nodes[0].prev == prev, "the sentinel's prev is not the MRU entry"
        assert count == self._size == len(self._index) <= self._maxsize, "size drifted"
        assert accesses == self._total_accesses, "total_accesses drifted"
        i, prev = self._nodes[0].enext, 0
        while i != 0:
            n = &self._nodes[i]
            assert n.heap_pos == _IN_LIST and n.eprev == prev, f"bad expiry link at slot {i}"
            assert prev == 0 or self._nodes[prev].expires <= n.expires, "expiry list order"
            expiring -= 1
            prev, i = i, n.enext
        assert self._nodes[0].eprev == prev, "the sentinel's eprev is not the last expiry"
        assert expiring == self._heap_len, "heap size drifted"
        for pos in range(self._heap_len):
            e = self._heap[pos]
            assert self._nodes[e.slot].heap_pos == pos, "heap position drifted"
            assert self._nodes[e.slot].expires == e.expires, "heap expiry drifted"
            assert pos == 0 or self._heap[(pos - 1) >> 1].expires <= e.expires, "heap order"


MutableMapping.register(LRUCache)


cdef void _release_nodes(Node* nodes, Py_ssize_t hi) noexcept:
    """Release the references held by slots 1..hi-1 of a detached node array."""
    cdef Py_ssize_t i
    cdef PyObject* k
    cdef PyObject* v
    if nodes == NULL:
        return
    for i in range(1, hi):
        k = nodes[i].key
        v = nodes[i].value
        nodes[i].key = NULL
        nodes[i].value = NULL
        _xdecref(k)
        _xdecref(v)


# ------------------------------------------------------------------------ cyclic GC support
# Keys and values live in a C array, so the traverse/clear functions Cython generates (which
# know only the object attributes) are wrapped to visit and release them too.

ctypedef int (*_visitproc)(PyObject*, void*) noexcept
ctypedef int (*_traverseproc)(PyObject*, _visitproc, void*) noexcept
ctypedef int (*_inquiry)(PyObject*) noexcept

cdef extern from "Python.h":
    ctypedef struct _GCSlots "PyTypeObject":
        _traverseproc tp_traverse
        _inquiry tp_clear

cdef _traverseproc _base_traverse = (<_GCSlots*><PyObject*>LRUCache).tp_traverse


cdef int _cache_traverse(PyObject* o, _visitproc visit, void* arg) noexcept:
    cdef int r = _base_traverse(o, visit, arg) if _base_traverse != NULL else 0
    cdef Py_ssize_t i
    cdef Node* nodes = (<LRUCache>o)._nodes
    for i in range(1, (<LRUCache>o)._hi):
        if r:
            return r
        if nodes[i].key != NULL:
            r = visit(nodes[i].key, arg) or visit(nodes[i].value, arg)
    return r


cdef int _cache_clear(PyObject* o) noexcept:
    cdef Node* old_nodes = NULL
    cdef int32_t old_hi = 0
    try:
        (<LRUCache>o)._swap_out(&old_nodes, &old_hi)
    except MemoryError:
        PyErr_Clear()
        return 0
    _release_nodes(old_nodes, old_hi)
    PyMem_Free(old_nodes)
    return 0


(<_GCSlots*><PyObject*>LRUCache).tp_traverse = _cache_traverse
(<_GCSlots*><PyObject*>LRUCache).tp_clear = _cache_clear
