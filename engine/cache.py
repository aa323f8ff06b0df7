"""The engine's LRU cache with a default and a per-entry TTL: `LRUCache` (alias `TTLCache`).

`LRUCache` is the compiled `engine._cache.LRUCache` (ext/_cache.pyx, where its layout and thread
safety are explained). `PyLRUCache` below is the plain-Python reference it is tested against:
same contract, same counters, same eviction order. It is what `LRUCache` names when the user sets
ENGINE_PURE=1, and the readable statement of the semantics:

- A `collections.abc.MutableMapping` following cachetools' TTLCache: `maxsize`, `currsize`,
  `ttl`, `timer`, and `expire(time=None)` returning the (key, value) pairs it removed.
- An entry put at time t with ttl s is alive while timer() < t + s. `ttl=None` or `0` (for the
  cache or for one `put`) means "never expires"; `put(key, value)` uses the cache's ttl.
- `get()`/`[]` count a hit or a miss (a cached None is a hit) and make the entry the most recently
  used. An expired entry reads as a miss and stays until it is purged: by the next put of a new
  key, `expire()`, `len()`, `currsize`, `stats()`, `popitem()`, or removing it. Purges count in
  `expirations`; a new key put into a full cache evicts the least recently used live entry
  (`evictions`) after purging. `peek()`, `in`, iteration, `keys()`, `values()` and `items()`
  count nothing and leave recency alone. A cache with maxsize 0 stores nothing.
- The old layer's API keeps working: `LRUCache(max_size=..., default_ttl=...)`, `put(key, value,
  ttl=None)`, `get(key)` -> value or None, `invalidate(key)` -> bool, `clear()` (counters are
  kept), `cleanup_expired()` -> int, and `stats()` with its keys size, max_size, total_accesses
  (hits served by the entries now cached) and avg_accesses beside hits, misses, evictions,
  expirations and hit_rate. stats() is O(1) apart from purging what expired.

The reference serialises every operation with one lock; its expiry index is a heapq of
(expires, sequence, key) with lazy deletion, compacted when half of it is stale.
"""

from __future__ import annotations

import heapq
import math
import operator
import threading
import time
from collections import OrderedDict
from collections.abc import (
    Callable,
    Hashable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from numbers import Real
from typing import TYPE_CHECKING, Any

from ._native import load
from .errors import ValidationError

__all__ = ["LRUCache", "PyLRUCache", "TTLCache"]

_native = load("_cache")

_UNSET: Any = object()
_MISSING: Any = object()
_MAX_MAXSIZE = 2**31 - 2  # the native slots are int32; the reference keeps the same limit
_KEYS, _VALUES, _ITEMS = 0, 1, 2


def _parse_ttl(ttl: object) -> float:
    """Seconds; math.inf when the entry must never expire (None or 0)."""
    if ttl is None:
        return math.inf
    if isinstance(ttl, bool) or not isinstance(ttl, Real):
        raise ValidationError(f"ttl must be a number of seconds or None, got {type(ttl).__name__}")
    secs = float(ttl)
    if math.isnan(secs) or secs < 0:
        raise ValidationError(f"ttl must be >= 0 seconds (0 or None: never expires), got {ttl!r}")
    return math.inf if secs == 0 else secs


def _parse_maxsize(maxsize: Any) -> int:
    if isinstance(maxsize, bool):
        raise ValidationError("maxsize must be an int, got bool")
    try:
        size = operator.index(maxsize)
    except TypeError:
        raise ValidationError(f"maxsize must be an int, got {type(maxsize).__name__}") from None
    if size < 0 or size > _MAX_MAXSIZE:
        raise ValidationError(f"maxsize must be between 0 and {_MAX_MAXSIZE}, got {size}")
    return size


class _ItemsView(ItemsView[Hashable, Any]):
    """items() that neither counts hits nor refreshes recency."""

    __slots__ = ()

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        key, value = item
        found = self._mapping.peek(key, _MISSING)  # type: ignore[attr-defined]
        return found is not _MISSING and (found is value or found == value)

    def __iter__(self) -> Iterator[tuple[Hashable, Any]]:
        return iter(self._mapping._snapshot(_ITEMS))  # type: ignore[attr-defined]


class _ValuesView(ValuesView[Any]):
    """values() that neither counts hits nor refreshes recency."""

    __slots__ = ()

    def __contains__(self, value: object) -> bool:
        return any(v is value or v == value for v in self._mapping._snapshot(_VALUES))  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._mapping._snapshot(_VALUES))  # type: ignore[attr-defined]


class _Entry:
    __slots__ = ("accesses", "expires", "seq", "value")

    def __init__(self, value: Any, expires: float, seq: int) -> None:
        self.value = value
        self.expires = expires
        self.seq = seq
        self.accesses = 0


class PyLRUCache(MutableMapping[Hashable, Any]):
    """Plain-Python reference of `engine._cache.LRUCache` (see the module docstring)."""

    def __init__(
        self,
        maxsize: int = _UNSET,
        ttl: float | None = _UNSET,
        *,
        timer: Callable[[], float] = time.monotonic,
        max_size: int = _UNSET,
        default_ttl: float | None = _UNSET,
    ) -> None:
        if max_size is not _UNSET:
            if maxsize is not _UNSET:
                raise TypeError("give maxsize or max_size, not both")
            maxsize = max_size
        if default_ttl is not _UNSET:
            if ttl is not _UNSET:
                raise TypeError("give ttl or default_ttl, not both")
            ttl = default_ttl
        timer = time.monotonic if timer is None else timer
        if not callable(timer):
            raise ValidationError(f"timer must be callable, got {type(timer).__name__}")
        self._maxsize = _parse_maxsize(1000 if maxsize is _UNSET else maxsize)
        self._ttl = _parse_ttl(3600.0 if ttl is _UNSET else ttl)
        self._timer = timer
        self._data: OrderedDict[Hashable, _Entry] = OrderedDict()  # least recently used first
        self._heap: list[tuple[float, int, Hashable]] = []  # (expires, seq, key), lazily deleted
        self._seq = 0
        self._lock = threading.RLock()
        self._hits = self._misses = self._evictions = self._expirations = self._total_accesses = 0

    # ---------------------------------------------------------------- internals (lock held)

    def _now(self) -> float:
        return float(self._timer())

    def _index(self, key: Hashable, entry: _Entry) -> None:
        self._seq += 1
        entry.seq = self._seq
        if entry.expires != math.inf:
            heapq.heappush(self._heap, (entry.expires, entry.seq, key))
            if len(self._heap) > 2 * len(self._data) + 64:
                self._heap = [(e.expires, e.seq, k) for k, e in self._data.items() if e.expires != math.inf]
                heapq.heapify(self._heap)

    def _due(self, now: float) -> bool:
        heap = self._heap
        while heap:
            entry = self._data.get(heap[0][2])
            if entry is not None and entry.seq == heap[0][1]:
                return heap[0][0] <= now
            heapq.heappop(heap)  # stale: that entry was replaced or removed
        return False

    def _expire(self, now: float) -> list[tuple[Hashable, Any]]:
        out = []
        while self._due(now):
            key = heapq.heappop(self._heap)[2]
            entry = self._data.pop(key)
            self._total_accesses -= entry.accesses
            self._expirations += 1
            out.append((key, entry.value))
        return out

    def _lookup(self, key: Hashable, now: float, touch: bool) -> Any:
        entry = self._data.get(key)
        if entry is None or not now < entry.expires:
            self._misses += touch
            return _MISSING
        if touch:
            self._data.move_to_end(key)
            entry.accesses += 1
            self._total_accesses += 1
            self._hits += 1
        return entry.value

    def _put(self, key: Hashable, value: Any, secs: float, now: float) -> None:
        entry = self._data.get(key)
        if entry is not None:
            self._total_accesses -= entry.accesses
            entry.value, entry.expires, entry.accesses = value, now + secs, 0
            self._data.move_to_end(key)
            self._index(key, entry)
            return
        if self._maxsize == 0:
            return
        self._expire(now)
        if len(self._data) >= self._maxsize:
            _, victim = self._data.popitem(last=False)
            self._total_accesses -= victim.accesses
            self._evictions += 1
        self._data[key] = entry = _Entry(value, now + secs, 0)
        self._index(key, entry)

    def _take(self, key: Hashable) -> Any:
        with self._lock:
            now = self._now()
            entry = self._data.pop(key, None)
            if entry is None:
                return _MISSING
            self._total_accesses -= entry.accesses
            if now < entry.expires:
                return entry.value
            self._expirations += 1
            return _MISSING

    def _read(self, key: Hashable, default: Any, touch: bool) -> Any:
        with self._lock:
            value = self._lookup(key, self._now(), touch)
        return default if value is _MISSING else value

    def _snapshot(self, kind: int) -> list[Any]:
        """Live keys, values or (key, value) pairs, least recently used first; counts nothing."""
        with self._lock:
            now = self._now()
            live = [(k, e.value) for k, e in self._data.items() if now < e.expires]
        if kind == _ITEMS:
            return live
        return [pair[kind] for pair in live]

    def _check(self) -> None:
        """Verify the internal invariants (for tests); raises AssertionError."""
        with self._lock:
            assert len(self._data) <= self._maxsize, "size above maxsize"
            assert sum(e.accesses for e in self._data.values()) == self._total_accesses
            indexed = {(e.expires, e.seq, k) for k, e in self._data.items() if e.expires != math.inf}
            assert indexed <= set(self._heap), "an expiring entry is missing from the heap"

    # ---------------------------------------------------------------- the cachetools contract

    def __getitem__(self, key: Hashable) -> Any:
        value = self._read(key, _MISSING, True)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._put(key, value, self._ttl, self._now())

    def __delitem__(self, key: Hashable) -> None:
        if self._take(key) is _MISSING:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return self._read(key, _MISSING, False) is not _MISSING  # type: ignore[arg-type]

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._now())
            return len(self._data)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._snapshot(_KEYS))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(maxsize={self._maxsize}, ttl={self.ttl!r}, currsize={len(self)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self._snapshot(_ITEMS)) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value of a live entry, else `default`; counts a hit or a miss (a cached None is a hit)."""
        return self._read(key, default, True)

    def peek(self, key: Hashable, default: Any = None) -> Any:
        """Like get() but counts nothing and leaves the entry's recency alone."""
        return self._read(key, default, False)

    def put(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        """Store `value` for ttl seconds (None: the cache's ttl; 0: never expires)."""
        secs = self._ttl if ttl is None else _parse_ttl(ttl)
        with self._lock:
            self._put(key, value, secs, self._now())

    def invalidate(self, key: Hashable) -> bool:
        """Remove `key`; True when a live entry was removed."""
        return self._take(key) is not _MISSING

    def pop(self, key: Hashable, default: Any = _MISSING) -> Any:
        """Remove `key` and return its value; `default` (or KeyError) when absent or expired."""
        value = self._take(key)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return value

    def popitem(self) -> tuple[Hashable, Any]:
        """Remove and return the least recently used live (key, value); KeyError when empty."""
        with self._lock:
            self._expire(self._now())
            if not self._data:
                raise KeyError(f"popitem(): {type(self).__name__} is empty")
            key, entry = self._data.popitem(last=False)
            self._total_accesses -= entry.accesses
            return key, entry.value

    def setdefault(self, key: Hashable, default: Any = None) -> Any:
        """get(key) when live (a hit), else put(key, default) (a miss) and return default."""
        with self._lock:
            now = self._now()
            value = self._lookup(key, now, True)
            if value is _MISSING:
                self._put(key, default, self._ttl, now)
                return default
            return value

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Put every item of a mapping (or of an iterable of pairs), then the keyword items."""
        pairs: Iterable[tuple[Hashable, Any]] = other
        if isinstance(other, Mapping) or hasattr(other, "keys"):
            pairs = [(key, other[key]) for key in other.keys()]
        for key, value in pairs:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def keys(self) -> KeysView[Hashable]:
        """A view of the live keys, least recently used first."""
        return KeysView(self)

    def values(self) -> ValuesView[Any]:
        """A view of the live values; iterating it counts no hits."""
        return _ValuesView(self)

    def items(self) -> ItemsView[Hashable, Any]:
        """A view of the live (key, value) pairs; iterating it counts no hits."""
        return _ItemsView(self)

    def clear(self) -> None:
        """Remove every entry. The hit, miss, eviction and expiration counters are kept."""
        with self._lock:
            self._data.clear()
            self._heap.clear()
            self._total_accesses = 0

    def expire(self, time: float | None = None) -> list[tuple[Hashable, Any]]:
        """Remove the entries expired at `time` (default: now); returns them as (key, value) pairs."""
        with self._lock:
            return self._expire(self._now() if time is None else float(time))

    def cleanup_expired(self) -> int:
        """Remove expired entries and return how many (the old layer's name for expire())."""
        return len(self.expire())

    def stats(self) -> dict[str, int | float]:
        """Counters: hits, misses, evictions, expirations, size, max_size, hit_rate,
        total_accesses (hits served by the entries now cached) and avg_accesses (per entry)."""
        with self._lock:
            self._expire(self._now())
            size, lookups = len(self._data), self._hits + self._misses
            return {
                "hits": self._hits,
                "misses": self._misses,
                "evictions": self._evictions,
                "expirations": self._expirations,
                "size": size,
                "max_size": self._maxsize,
                "hit_rate": self._hits / lookups if lookups else 0.0,
                "total_accesses": self._total_accesses,
                "avg_accesses": self._total_accesses / size if size else 0.0,
            }

    @property
    def maxsize(self) -> int:
        """The most entries the cache holds."""
        return self._maxsize

    @property
    def currsize(self) -> int:
        """Live entries now (expired ones are purged first)."""
        return len(self)

    @property
    def ttl(self) -> float | None:
        """Default seconds an entry lives; None when entries do not expire by default."""
        return None if self._ttl == math.inf else self._ttl

    @property
    def timer(self) -> Callable[[], float]:
        """The clock."""
        return self._timer


if TYPE_CHECKING:
    from ._cache import LRUCache as LRUCache
else:
    LRUCache = PyLRUCache if _native is None else _native.LRUCache

TTLCache = LRUCache
