"""Read caches that are never stale: entries are tagged with the generations of what they read.

A cached value remembers the generation of every dependency it was computed
from: a stream's length (streams are append-only, so the length changes on
every write to it) or a key space's write counter (bumped in the same LMDB
transaction as every put or delete of a key in that space). A lookup compares
those generations with the store's current ones, so a write to `rl_actions`,
in this process or any other, invalidates exactly the entries that read
`rl_actions` and nothing else; no wholesale clearing. When LMDB's last
transaction id has not moved since the previous check, no generation can
have changed and the check costs one `env.info()` call.

Values are stored frozen (orjson bytes, or a deep copy) and thawed on every
hit, so a caller can never mutate what the cache holds.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import orjson

from .cache import LRUCache
from .local import LocalStore

_MISSING = object()


def stream_dep(name: str) -> str:
    """The dependency on stream `name`."""
    return "s:" + name


def space_dep(space: str) -> str:
    """The dependency on key space `space` (a key up to its last ':', e.g. `dspy_agent:signatures`)."""
    return "k:" + space


def freeze_json(value: Any) -> Any:
    """Freeze a JSON-like value as orjson bytes (falls back to a deep copy for anything else)."""
    try:
        return (True, orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
    except TypeError:
        return (False, copy.deepcopy(value))


def thaw_json(frozen: Any) -> Any:
    """Inverse of `freeze_json`: a fresh object on every call."""
    is_json, payload = frozen
    return orjson.loads(payload) if is_json else copy.deepcopy(payload)


class QueryTimings:
    """Execution times per query kind (the last 1,024 of each): count, p50, p95, for monitoring."""

    def __init__(self, keep: int = 1024) -> None:
        self._keep = keep
        self._times: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, kind: str, seconds: float) -> None:
        with self._lock:
            times = self._times.get(kind)
            if times is None:
                times = self._times[kind] = deque(maxlen=self._keep)
            times.append(seconds)
            self._counts[kind] = self._counts.get(kind, 0) + 1

    def report(self) -> dict[str, dict[str, float]]:
        """`{kind: {"count", "p50_ms", "p95_ms", "max_ms"}}` (percentiles over the kept window)."""
        out = {}
        with self._lock:
            items = [(k, sorted(v), self._counts[k]) for k, v in self._times.items()]
        for kind, times, count in sorted(items):
            n = len(times)
            out[kind] = {
                "count": count,
                "p50_ms": round(times[(n - 1) // 2] * 1e3, 4),
                "p95_ms": round(times[min(n - 1, int(0.95 * n))] * 1e3, 4),
                "max_ms": round(times[-1] * 1e3, 4),
            }
        return out


class GenerationCache:
    """An LRU+TTL cache whose entries die when a stream or key space they read is written."""

    def __init__(
        self, store: LocalStore, maxsize: int, ttl: float, *, timings: QueryTimings | None = None
    ) -> None:
        self._store = store
        self.timings = timings
        self._cache = LRUCache(maxsize, ttl)
        self._lock = threading.Lock()
        self._seen_txn = -1
        self._seen: dict[str, int] = {}
        self.hits = 0
        self.misses = 0
        self.stale = 0

    def _generation(self, dep: str) -> int:
        if dep.startswith("s:"):
            return self._store.stream_length(dep[2:])
        return self._store.space_generation(dep[2:])

    def generations(self, deps: Sequence[str]) -> tuple[int, ...]:
        """The current generation of each dependency."""
        txn = self._store.last_txn_id()
        with self._lock:
            if txn != self._seen_txn:
                self._seen = {}
                self._seen_txn = txn
            seen = self._seen
        out = []
        for dep in deps:
            g = seen.get(dep)
            if g is None:
                g = seen[dep] = self._generation(dep)
            out.append(g)
        return tuple(out)

    def get_or_compute(
        self,
        key: Hashable,
        deps: Sequence[str],
        compute: Callable[[], Any],
        *,
        freeze: Callable[[Any], Any] = freeze_json,
        thaw: Callable[[Any], Any] = thaw_json,
        cache_if: Callable[[Any], bool] | None = None,
    ) -> Any:
        """The cached value for `key` if none of `deps` changed since it was computed; else compute it."""
        gens = self.generations(deps)  # taken before computing: a concurrent write makes the entry stale
        entry = self._cache.get(key, _MISSING)
        if entry is not _MISSING:
            if entry[0] == gens:
                self.hits += 1
                return thaw(entry[1])
            self.stale += 1
            self._cache.invalidate(key)
        self.misses += 1
        start = time.perf_counter()
        value = compute()
        if self.timings is not None:
            kind = key[0] if isinstance(key, tuple) and key and isinstance(key[0], str) else "other"
            self.timings.record(kind, time.perf_counter() - start)
        if cache_if is None or cache_if(value):
            self._cache.put(key, (gens, freeze(value)))
        return value

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._cache.clear()

    def stats(self) -> dict[str, Any]:
        """size, max_size, hits, misses, hit_rate, evictions, expirations, stale (invalidated by writes)."""
        inner = self._cache.stats()
        total = self.hits + self.misses
        return {
            "size": len(self._cache),
            "max_size": self._cache.maxsize,
            "ttl": self._cache.ttl,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / total if total else 0.0,
            "evictions": inner.get("evictions", 0),
            "expirations": inner.get("expirations", 0),
            "stale": self.stale,
        }
