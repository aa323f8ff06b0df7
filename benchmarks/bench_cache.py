"""Cache hot paths: the engine's native LRUCache against its peers and the old layer, same run.

Groups (short string keys, every cache at capacity ENGINE_BENCH_CACHE_SIZE, default 10,000;
one round is ENGINE_BENCH_N operations, default 10,000; extra_info["ns_per_op"] is the median
round / N, "ns_per_op_min" the fastest round / N, for a noisy machine):
  cache-get-hit    get(key) of a live key
  cache-get-miss   get(key) of an absent key
  cache-put-evict  putting a new key into a full cache, so every put evicts one entry
Caches with a TTL are built with 3600 s (ours, cachebox.VTTLCache per entry, cachetools.TTLCache,
the old layer); the others have none. Targets from the issue: get-hit within 1.2x of
cachebox.LRUCache and at least 20x faster than cachetools.TTLCache; put-evict at least as fast as
cachebox.VTTLCache. Peers: `pip install cachebox cachetools lru-dict`; a missing peer fails its
benchmark. "engine-reference" is the plain-Python reference (ENGINE_PURE=1).
"""

from __future__ import annotations

import importlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import env_int

from engine.cache import PyLRUCache

N = env_int("ENGINE_BENCH_N", 10_000)
CAPACITY = env_int("ENGINE_BENCH_CACHE_SIZE", 10_000)
TTL = 3600.0

TARGETS = {
    "cache-get-hit": "<=1.2x cachebox.LRUCache and >=20x faster than cachetools.TTLCache",
    "cache-get-miss": "none set (reported)",
    "cache-put-evict": "<= cachebox.VTTLCache",
}
# the same targets as minimum speed-ups (peer time / our time) for scripts/bench_report.py
TARGET_VS = {
    "cache-get-hit": {"cachebox.LRUCache": 1 / 1.2, "cachetools.TTLCache": 20.0},
    "cache-put-evict": {"cachebox.VTTLCache": 1.0},
}


@dataclass
class _OldEntry:
    value: Any
    timestamp: float
    ttl: float
    access_count: int = 0


class OldLayerCache:
    """The layer being replaced: an OrderedDict of entries with a timestamp, a ttl and a count."""

    def __init__(self, max_size: int = 1000, default_ttl: float = 3600) -> None:
        self.max_size = max_size
        self.default_ttl = default_ttl
        self.cache: OrderedDict[str, _OldEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self.cache)

    def get(self, key: str) -> Any:
        entry = self.cache.get(key)
        if entry is None:
            return None
        if time.time() - entry.timestamp > entry.ttl:
            del self.cache[key]
            return None
        entry.access_count += 1
        self.cache.move_to_end(key)
        return entry.value

    def put(self, key: str, value: Any, ttl: float | None = None) -> None:
        if key in self.cache:
            del self.cache[key]
        elif len(self.cache) >= self.max_size:
            self.cache.popitem(last=False)
        self.cache[key] = _OldEntry(value, time.time(), ttl or self.default_ttl)


def _peer(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"benchmark peer {module} is not installed: pip install {package}")


def _engine(capacity: int) -> Any:
    return importlib.import_module("engine._cache").LRUCache(capacity, TTL)  # fails loudly if unbuilt


# impl -> (make(capacity), put style): "put" calls put(key, value), "insert" insert(key, value),
# "insert-ttl" insert(key, value, TTL), "setitem" cache[key] = value
IMPLS: dict[str, tuple[Callable[[int], Any], str]] = {
    "engine": (_engine, "put"),
    "engine-reference": (lambda cap: PyLRUCache(cap, TTL), "put"),
    "cachebox.LRUCache": (lambda cap: _peer("cachebox", "cachebox").LRUCache(cap), "insert"),
    "cachebox.VTTLCache": (lambda cap: _peer("cachebox", "cachebox").VTTLCache(cap), "insert-ttl"),
    "cachetools.TTLCache": (lambda cap: _peer("cachetools", "cachetools").TTLCache(cap, TTL), "setitem"),
    "cachetools.LRUCache": (lambda cap: _peer("cachetools", "cachetools").LRUCache(cap), "setitem"),
    "lru.LRU": (lambda cap: _peer("lru", "lru-dict").LRU(cap), "setitem"),
    "old-layer (OrderedDict)": (lambda cap: OldLayerCache(cap, TTL), "put"),
}


def _filled(impl: str, keys: list[str]) -> tuple[Any, Callable[[list[str]], None]]:
    """A cache holding `keys` (capacity len(keys)), and a loop that puts a batch of keys into it."""
    make, style = IMPLS[impl]
    cache = make(len(keys))

    def put_put(batch: list[str]) -> None:
        put = cache.put
        for k in batch:
            put(k, k)

    def put_insert(batch: list[str]) -> None:
        insert = cache.insert
        for k in batch:
            insert(k, k)

    def put_insert_ttl(batch: list[str]) -> None:
        insert = cache.insert
        for k in batch:
            insert(k, k, TTL)

    def put_setitem(batch: list[str]) -> None:
        c = cache
        for k in batch:
            c[k] = k

    loops = {"put": put_put, "insert": put_insert, "insert-ttl": put_insert_ttl, "setitem": put_setitem}
    loop = loops[style]
    loop(keys)
    return cache, loop


def _report(benchmark: Any, impl: str, group: str) -> None:
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["ops_per_round"] = N
    benchmark.extra_info["capacity"] = CAPACITY
    if impl == "engine":
        benchmark.extra_info["target"] = TARGETS[group]
        if group in TARGET_VS:
            benchmark.extra_info["target_vs"] = TARGET_VS[group]
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["ns_per_op"] = round(benchmark.stats.stats.median / N * 1e9, 1)
        benchmark.extra_info["ns_per_op_min"] = round(benchmark.stats.stats.min / N * 1e9, 1)


def _keys(prefix: str, count: int) -> list[str]:
    return [f"{prefix}:{i}" for i in range(count)]


@pytest.mark.parametrize("impl", list(IMPLS))
def test_get_hit(benchmark, impl):
    keys = _keys("key", CAPACITY)
    cache, _ = _filled(impl, keys)
    batch = [keys[i % CAPACITY] for i in range(N)]

    def run() -> None:
        get = cache.get
        for k in batch:
            get(k)

    benchmark.group = "cache-get-hit"
    benchmark(run)
    assert cache.get(batch[-1]) == batch[-1]
    _report(benchmark, impl, benchmark.group)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_get_miss(benchmark, impl):
    cache, _ = _filled(impl, _keys("key", CAPACITY))
    batch = _keys("absent", N)

    def run() -> None:
        get = cache.get
        for k in batch:
            get(k)

    benchmark.group = "cache-get-miss"
    benchmark(run)
    assert cache.get(batch[0]) is None
    _report(benchmark, impl, benchmark.group)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_put_evict(benchmark, impl):
    # A ring of CAPACITY + N keys, walked N at a time: each key put was evicted long ago.
    ring = _keys("key", CAPACITY + N)
    cache, put_loop = _filled(impl, ring[:CAPACITY])
    ring2 = ring + ring
    position = [CAPACITY]

    def run() -> None:
        start = position[0]
        position[0] = (start + N) % len(ring)
        put_loop(ring2[start : start + N])

    benchmark.group = "cache-put-evict"
    benchmark(run)
    assert len(cache) == CAPACITY
    _report(benchmark, impl, benchmark.group)
