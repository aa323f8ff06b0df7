"""engine.cache: one contract, run against the native LRUCache and the Python reference.

Time is an injected fake clock, so no TTL test sleeps; the native default clock (read in C) has
its own tests. A hypothesis state machine drives both implementations with the same random
operations and compares every answer and counter; threads hammer both.
"""

from __future__ import annotations

import collections.abc
import enum
import gc
import importlib
import math
import os
import random
import subprocess
import sys
import threading
import time
import weakref

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from engine.cache import PyLRUCache
from engine.errors import ValidationError

native = importlib.import_module("engine._cache")  # not built: fail loudly, never skip

IMPLS = [pytest.param(native.LRUCache, id="native"), pytest.param(PyLRUCache, id="reference")]


class FakeClock:
    """A timer that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=IMPLS)
def Cache(request):
    return request.param


@pytest.fixture
def clock():
    return FakeClock()


class SlowKey:
    """A key whose hash and equality are Python code that gives the GIL away."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        time.sleep(0)
        return self.n // 3  # three keys per hash: lookups compare against other keys

    def __eq__(self, other: object) -> bool:
        time.sleep(0)
        return isinstance(other, SlowKey) and other.n == self.n


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


# ---------------------------------------------------------------------------- the contract


def test_get_put_and_lru_order(Cache, clock):
    c = Cache(3, 60, timer=clock)
    c["a"] = 1
    c["b"] = 2
    c.put("c", 3)
    assert list(c) == ["a", "b", "c"]
    assert c.get("a") == 1
    assert list(c) == ["b", "c", "a"]
    c["d"] = 4  # evicts b, the least recently used
    assert "b" not in c
    assert list(c) == ["c", "a", "d"]
    c["c"] = 30  # overwriting refreshes recency and evicts nothing
    assert list(c.items()) == [("a", 1), ("d", 4), ("c", 30)]
    assert c.stats()["evictions"] == 1
    assert len(c) == c.currsize == 3
    c._check()


def test_cached_none_is_a_hit(Cache, clock):
    c = Cache(4, timer=clock)
    c.put("k", None)
    assert c.get("k", "default") is None
    assert c["k"] is None
    assert "k" in c
    assert c.get("absent") is None
    stats = c.stats()
    assert (stats["hits"], stats["misses"]) == (2, 1)


def test_getitem_and_delitem_raise_keyerror(Cache, clock):
    c = Cache(4, 10, timer=clock)
    with pytest.raises(KeyError):
        c["absent"]
    with pytest.raises(KeyError):
        del c["absent"]
    c["a"] = 1
    del c["a"]
    assert "a" not in c
    c["b"] = 2
    clock.advance(10)
    with pytest.raises(KeyError):
        c["b"]
    with pytest.raises(KeyError):
        del c["b"]  # removes the expired entry, like cachetools
    assert c.stats()["expirations"] == 1
    assert len(c) == 0


def test_default_ttl_boundary(Cache, clock):
    c = Cache(10, 5, timer=clock)
    c["a"] = 1
    clock.advance(4.5)
    assert c["a"] == 1
    clock.advance(0.5)  # exactly put time + ttl: expired
    assert "a" not in c
    assert c.get("a") is None
    assert c.peek("a", "gone") == "gone"
    assert c.stats()["expirations"] == 1  # stats() purged it
    assert c.expire() == []


def test_per_entry_ttl_and_no_expiry(Cache, clock):
    c = Cache(10, 5, timer=clock)
    c.put("short", 1, ttl=1)
    c.put("long", 2, ttl=100)
    c.put("never", 3, ttl=0)
    c.put("default", 4)
    clock.advance(1)
    assert list(c) == ["long", "never", "default"]
    clock.advance(4)
    assert list(c) == ["long", "never"]
    clock.advance(1e9)
    assert list(c) == ["never"]
    for no_expiry in (None, 0):
        d = Cache(10, no_expiry, timer=clock)
        assert d.ttl is None
        d["k"] = 1
        clock.advance(1e12)
        assert d["k"] == 1
        d.put("j", 2, ttl=1)
        clock.advance(1)
        assert "j" not in d
    assert Cache(10, 2.5, timer=clock).ttl == 2.5


def test_refreshing_an_entry_restarts_its_ttl(Cache, clock):
    c = Cache(10, 10, timer=clock)
    c["a"] = 1
    clock.advance(8)
    c["a"] = 2
    clock.advance(8)
    assert c["a"] == 2
    c.put("a", 3, ttl=0)
    clock.advance(1e6)
    assert c["a"] == 3
    c.put("a", 4, ttl=1)
    clock.advance(1)
    assert "a" not in c


def test_expire_returns_what_it_removed(Cache, clock):
    c = Cache(10, 10, timer=clock)
    c.put("a", 1, ttl=1)
    c.put("b", 2, ttl=2)
    c.put("c", 3, ttl=3)
    c.put("d", None, ttl=0)
    assert c.expire(time=clock.now + 2) == [("a", 1), ("b", 2)]
    assert c.expire() == []
    clock.advance(3)
    assert dict(c.expire()) == {"c": 3}
    assert list(c) == ["d"]
    c.put("e", 5, ttl=1)
    clock.advance(5)
    assert c.cleanup_expired() == 1
    assert c.cleanup_expired() == 0
    assert c.stats()["expirations"] == 4


def test_put_purges_expired_entries_before_evicting(Cache, clock):
    c = Cache(3, 100, timer=clock)
    c["old"] = 1
    c.put("short", 2, ttl=1)
    c["new"] = 3
    clock.advance(1)
    c["x"] = 4  # full: "short" expired, so it goes and "old" (the LRU entry) stays
    assert list(c) == ["old", "new", "x"]
    stats = c.stats()
    assert (stats["expirations"], stats["evictions"]) == (1, 0)
    c["y"] = 5
    assert list(c) == ["new", "x", "y"]
    assert c.stats()["evictions"] == 1


def test_stats(Cache, clock):
    c = Cache(2, 10, timer=clock)
    counters = ("hits", "misses", "evictions", "expirations", "size", "max_size", "total_accesses")
    assert c.stats() == dict.fromkeys(counters, 0) | {"max_size": 2, "hit_rate": 0.0, "avg_accesses": 0.0}
    c["a"] = 1
    c["b"] = 2
    c.get("b")
    for _ in range(3):
        c.get("a")
    c.get("zz")
    c["c"] = 3  # evicts b, whose one access leaves total_accesses
    expected = dict(zip(counters, (4, 1, 1, 0, 2, 2, 3), strict=True)) | {
        "hit_rate": 0.8,
        "avg_accesses": 1.5,
    }
    assert c.stats() == expected
    c["a"] = 10  # a put starts the entry's access count again
    clock.advance(10)
    stats = c.stats()
    assert (stats["size"], stats["total_accesses"], stats["expirations"]) == (0, 0, 2)


def test_old_layer_api(Cache, clock):
    c = Cache(max_size=2, default_ttl=10, timer=clock)
    assert (c.maxsize, c.ttl) == (2, 10)
    c.put("a", {"x": 1})
    c.put("b", 2, ttl=1)
    assert c.get("a") == {"x": 1}
    assert c.get("missing") is None
    assert c.invalidate("a") is True
    assert c.invalidate("a") is False
    clock.advance(1)
    assert c.invalidate("b") is False  # expired: removed, but it was not live
    c.put("c", 3, ttl=1)
    clock.advance(1)
    assert c.cleanup_expired() == 1
    stats = c.stats()
    assert {"size", "max_size", "total_accesses", "avg_accesses"} <= stats.keys()
    defaults = Cache()
    assert (defaults.maxsize, defaults.ttl, defaults.timer) == (1000, 3600.0, time.monotonic)
    with pytest.raises(TypeError):
        Cache(10, max_size=10)
    with pytest.raises(TypeError):
        Cache(10, 5, default_ttl=5)


@pytest.mark.parametrize("kwargs", [{"maxsize": -1}, {"maxsize": "3"}, {"maxsize": True}, {"maxsize": 2**31}])
def test_bad_maxsize(Cache, kwargs):
    with pytest.raises(ValidationError):
        Cache(**kwargs)


@pytest.mark.parametrize("ttl", [-1, math.nan, "1", True, [1]])
def test_bad_ttl(Cache, clock, ttl):
    with pytest.raises(ValidationError):
        Cache(10, ttl)
    c = Cache(10, timer=clock)
    with pytest.raises(ValidationError):
        c.put("k", 1, ttl=ttl)
    assert "k" not in c
    with pytest.raises(ValidationError):
        Cache(10, timer=42)


def test_pop_popitem_setdefault_update(Cache, clock):
    c = Cache(3, 10, timer=clock)
    c.update({"a": 1}, b=2)
    c.update([("c", 3)])
    assert (c.pop("a"), c.pop("a", "d")) == (1, "d")
    with pytest.raises(KeyError):
        c.pop("a")
    assert c.setdefault("d", 4) == 4  # a miss, then stored
    assert c.setdefault("d", 40) == 4  # a hit
    assert c.popitem() == ("b", 2)
    clock.advance(10)
    with pytest.raises(KeyError):
        c.popitem()  # everything expired
    stats = c.stats()
    assert (stats["hits"], stats["misses"], stats["expirations"]) == (1, 1, 2)


def test_clear_keeps_counters(Cache, clock):
    c = Cache(2, timer=clock)
    c["a"] = 1
    c["b"] = 2
    c["c"] = 3
    c.get("b")
    c.clear()
    assert len(c) == 0
    assert list(c) == []
    stats = c.stats()
    assert (stats["hits"], stats["evictions"], stats["size"], stats["total_accesses"]) == (1, 1, 0, 0)
    c["a"] = 1
    assert c["a"] == 1
    c._check()


def test_mapping_protocol_and_views_count_nothing(Cache, clock):
    c = Cache(5, 10, timer=clock)
    assert isinstance(c, collections.abc.MutableMapping)
    c.update(a=1, b=2, c=3)
    before = c.stats()
    assert list(c.keys()) == ["a", "b", "c"]
    assert list(c.values()) == [1, 2, 3]
    assert list(c.items()) == [("a", 1), ("b", 2), ("c", 3)]
    assert ("a", 1) in c.items()
    assert ("a", 2) not in c.items()
    assert "nope" not in c.items()
    assert 2 in c.values()
    assert "b" in c.keys()
    assert c.peek("a") == 1
    assert c == {"a": 1, "b": 2, "c": 3}
    assert c != {"a": 1}
    assert c != [("a", 1)]
    assert c.stats() == before
    assert list(c) == ["a", "b", "c"]  # nothing moved
    with pytest.raises(TypeError):
        hash(c)
    assert "maxsize=5" in repr(c) and "currsize=3" in repr(c)


def test_maxsize_zero_stores_nothing(Cache, clock):
    c = Cache(0, timer=clock)
    c["a"] = 1
    c.put("b", 2)
    assert len(c) == 0
    assert c.get("a") is None
    assert c.setdefault("c", 3) == 3
    assert "c" not in c


def test_mixed_and_python_level_keys(Cache, clock):
    c = Cache(20, timer=clock)
    c[1] = "int"
    assert c[1.0] == "int"
    assert c[True] == "int"
    c[(1, ("a", b"b"), None)] = "tuple"
    c[frozenset({1})] = "frozenset"
    c[Color.RED] = "enum"
    c[SlowKey(3)] = "slow"
    assert c[(1, ("a", b"b"), None)] == "tuple"
    assert c[frozenset({1})] == "frozenset"
    assert c[Color.RED] == "enum"
    assert c[SlowKey(3)] == "slow"
    assert SlowKey(4) not in c  # same hash, not equal
    c["s"] = "str"
    assert c.get("s") == "str"
    c._check()
    c.clear()
    c["s"] = "again"
    assert c["s"] == "again"


# ---------------------------------------------------------------------------- native only


def test_native_clock_is_read_in_c():
    c = native.LRUCache(10, 3600)
    assert c.timer is time.monotonic
    assert native.LRUCache(10, timer=time.monotonic).timer is time.monotonic
    c["long"] = 1
    c.put("half", 2, ttl=0.5)  # inside the coarse clock's slack: the precise clock decides
    c.put("short", 3, ttl=1e-6)
    deadline = time.monotonic() + 1e-4
    while time.monotonic() < deadline:  # a 0.1 ms spin, not a sleep
        pass
    assert (c.get("long"), c.get("half"), c.get("short"), "short" in c) == (1, 2, None, False)
    assert dict(c.expire()) == {"short": 3}
    assert dict(c.expire(time=time.monotonic() + 3600)) == {"long": 1, "half": 2}


def test_native_collects_reference_cycles():
    class Box:
        pass

    c = native.LRUCache(10)
    box = Box()
    box.cache = c
    c["value"] = box
    c[(1, box)] = "key"
    watch = weakref.ref(c)
    del c, box
    gc.collect()
    assert watch() is None


def test_native_reentrant_key_raises_and_stays_consistent():
    c = native.LRUCache(10)

    class Meddler:
        def __hash__(self):
            return 1

        def __eq__(self, other):
            c.get("x")  # called back while the cache holds its lock
            return False

    c[1] = "one"  # hash(1) == 1: a lookup of Meddler() compares against it
    with pytest.raises(RuntimeError, match="called back"):
        c[Meddler()] = "m"
    assert c[1] == "one"
    c._check()


# ---------------------------------------------------------------------------- threads


def _run_threads(work, threads):
    """Run work(t) for t in range(threads) at once, switching threads as often as CPython can."""
    errors = []

    def guarded(t):
        try:
            work(t)
        except BaseException as exc:
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        pool = [threading.Thread(target=guarded, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []


def _hammer(c, keys, ops_per_thread, threads):
    """Random operations from several threads; returns the lookups that count as hit or miss."""
    lookups = [0] * threads

    def work(t):
        rng = random.Random(t)
        for _ in range(ops_per_thread):
            key = rng.choice(keys)
            op = rng.random()
            if op < 0.45:
                c.get(key)
                lookups[t] += 1
            elif op < 0.75:
                c.put(key, t, ttl=rng.choice((None, 0, 1e-6, 60)))
            elif op < 0.82:
                c.invalidate(key)
            elif op < 0.88:
                c.setdefault(key, t)
                lookups[t] += 1
            elif op < 0.94:
                c.pop(key, None)
            elif op < 0.97:
                list(c.items())
            else:
                len(c)

    _run_threads(work, threads)
    return sum(lookups)


@pytest.mark.parametrize("make_key", [str, SlowKey], ids=["str-keys", "python-eq-keys"])
def test_threads_hammering_keep_the_cache_consistent(Cache, make_key):
    c = Cache(16)
    keys = [make_key(i) for i in range(40)]
    lookups = _hammer(c, keys, ops_per_thread=3000 if make_key is str else 600, threads=6)
    c._check()
    stats = c.stats()
    assert stats["hits"] + stats["misses"] == lookups  # no lost counter update
    assert stats["size"] == len(c) <= 16


@pytest.mark.parametrize("make_key", [str, SlowKey], ids=["str-keys", "python-eq-keys"])
def test_threads_lose_no_entries(Cache, make_key):
    per_thread, threads = (300 if make_key is str else 120), 6
    c = Cache(per_thread * threads)

    def work(t):
        for i in range(per_thread):
            c[make_key(t * per_thread + i)] = t

    _run_threads(work, threads)
    assert len(c) == per_thread * threads
    assert all(c.peek(make_key(n)) == n // per_thread for n in range(per_thread * threads))
    c._check()


# ---------------------------------------------------------------------------- native == reference

KEYS = st.sampled_from(["a", "b", "c", "d", "e", 1, (1, "a"), Color.BLUE])
TTLS = st.sampled_from([None, 0, 0.5, 1.0, 2.5])


class NativeMatchesReference(RuleBasedStateMachine):
    """Random operations on both implementations with one fake clock: same answers, same state."""

    REAL_CLOCK = False  # True: time.monotonic, so the native C fast paths run; ttls scaled up

    @initialize(maxsize=st.integers(0, 5), ttl=st.sampled_from([None, 1.0, 2.0]))
    def build(self, maxsize, ttl):
        self.clock = time.monotonic if self.REAL_CLOCK else FakeClock()
        self.native = native.LRUCache(maxsize, self.scaled(ttl), timer=self.clock)
        self.ref = PyLRUCache(maxsize, self.scaled(ttl), timer=self.clock)

    def scaled(self, ttl):
        return ttl * 10_000 if self.REAL_CLOCK and ttl else ttl  # nothing expires during the run

    def both(self, method, *args):
        results = []
        for c in (self.native, self.ref):
            try:
                results.append(("ok", getattr(c, method)(*args)))
            except KeyError:
                results.append(("KeyError", None))
        assert results[0] == results[1], (method, args, results)
        return results[0]

    @rule(key=KEYS, value=st.none() | st.integers(0, 9), ttl=TTLS)
    def put(self, key, value, ttl):
        self.both("put", key, value, self.scaled(ttl))

    @rule(key=KEYS, value=st.integers(0, 9))
    def setitem(self, key, value):
        self.both("__setitem__", key, value)

    @rule(key=KEYS)
    def lookups(self, key):
        self.both("get", key, "default")
        self.both("__getitem__", key)
        self.both("__contains__", key)
        self.both("peek", key)

    @rule(key=KEYS, value=st.integers(0, 9))
    def setdefault(self, key, value):
        self.both("setdefault", key, value)

    @rule(key=KEYS, method=st.sampled_from(["__delitem__", "pop", "invalidate"]))
    def remove(self, key, method):
        self.both(method, key)

    @rule()
    def popitem(self):
        self.both("popitem")

    @rule(seconds=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.5, -0.75]))
    def advance(self, seconds):  # an injected timer may even go back: entries then leave out of order
        if not self.REAL_CLOCK:
            self.clock.advance(seconds)

    @rule(method=st.sampled_from(["__len__", "cleanup_expired", "stats"]))
    def purging_reads(self, method):
        self.both(method)

    @rule()
    def expire(self):
        assert dict(self.native.expire()) == dict(self.ref.expire())

    @rule()
    def clear(self):
        self.both("clear")

    @invariant()
    def same_entries_in_same_order(self):
        assert list(self.native.items()) == list(self.ref.items())
        self.native._check()
        self.ref._check()


class NativeFastPathsMatchReference(NativeMatchesReference):
    REAL_CLOCK = True


for _machine in (NativeMatchesReference, NativeFastPathsMatchReference):
    _machine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_native_matches_reference = NativeMatchesReference.TestCase
test_native_fast_paths_match_reference = NativeFastPathsMatchReference.TestCase


# ---------------------------------------------------------------------------- selection


def test_engine_cache_selects_native_or_reference():
    code = "import engine.cache as m; print(m.LRUCache.__module__, m.TTLCache is m.LRUCache)"
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_PURE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["engine._cache", "True"]
    env["ENGINE_PURE"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["engine.cache", "True"]
