"""Generation-tagged caches: exact invalidation (also across processes), no aliasing, honest stats."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine.querycache import GenerationCache, space_dep, stream_dep
from tests.test_core import signature

ROOT = Path(__file__).resolve().parents[1]


def test_a_write_invalidates_exactly_the_entries_that_read_it(eng):
    calls = {"a": 0, "b": 0}

    def count(name):
        calls[name] += 1
        return {"n": eng.store.stream_length(name)}

    qc = eng.query_cache
    assert qc.get_or_compute("qa", [stream_dep("a")], lambda: count("a")) == {"n": 0}
    assert qc.get_or_compute("qb", [stream_dep("b")], lambda: count("b")) == {"n": 0}
    assert qc.get_or_compute("qa", [stream_dep("a")], lambda: count("a")) == {"n": 0}
    assert calls == {"a": 1, "b": 1}
    eng.append("a", 1)
    assert qc.get_or_compute("qa", [stream_dep("a")], lambda: count("a")) == {"n": 1}
    assert qc.get_or_compute("qb", [stream_dep("b")], lambda: count("b")) == {"n": 0}
    assert calls == {"a": 2, "b": 1}
    stats = qc.stats()
    assert (stats["hits"], stats["misses"], stats["stale"], stats["size"]) == (2, 3, 1, 2)
    assert stats["hit_rate"] == pytest.approx(2 / 5)


def test_cached_values_are_never_aliased(eng):
    qc = eng.query_cache
    first = qc.get_or_compute("k", [stream_dep("a")], lambda: {"list": [1, 2]})
    first["list"].append(3)
    second = qc.get_or_compute("k", [stream_dep("a")], lambda: pytest.fail("recomputed"))
    assert second == {"list": [1, 2]}
    second["list"].clear()
    assert qc.get_or_compute("k", [stream_dep("a")], lambda: None) == {"list": [1, 2]}


def test_signature_cache_sees_writes_from_another_process(eng, tmp_path):
    eng.store_signature_metrics(signature(score=10.0))
    assert eng.get_signature_metrics("CodeAnalyzer").performance_score == 10.0
    assert eng.get_signature_metrics("CodeAnalyzer").performance_score == 10.0
    code = (
        "import engine; from tests.test_core import signature;"
        f"e = engine.open({str(eng.store.path)!r}, auto_migrate=False);"
        "e.store_signature_metrics(signature(score=77.0)); e.close()"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
    assert eng.get_signature_metrics("CodeAnalyzer").performance_score == 77.0
    stats = eng.get_cache_stats()["main_cache"]
    assert stats["hits"] == 1 and stats["stale"] == 1


def test_a_cached_record_is_a_fresh_object_each_time(eng):
    eng.store_signature_metrics(signature())
    a = eng.get_signature_metrics("CodeAnalyzer")
    a.optimization_history.append({"x": 1})
    b = eng.get_signature_metrics("CodeAnalyzer")
    assert b.optimization_history == [] and a is not b


def test_verifier_write_does_not_invalidate_signatures(eng):
    from tests.test_core import verifier

    eng.store_signature_metrics(signature())
    eng.get_signature_metrics("CodeAnalyzer")
    eng.store_verifier_metrics(verifier())
    eng.get_signature_metrics("CodeAnalyzer")
    assert eng.get_cache_stats()["main_cache"]["hits"] == 1


def test_warm_and_clear(eng):
    eng.store_signature_metrics(signature("A"))
    assert eng.warm_cache(signatures=["A", "missing"], verifiers=["nope"]) == 1
    assert eng.get_cache_stats()["main_cache"]["size"] == 3  # misses are cached too (None is a value)
    eng.clear_cache()
    assert eng.get_cache_stats()["main_cache"]["size"] == 0


def test_space_dependency_and_lru_bound(tmp_path):
    store = engine.open(tmp_path / "x", auto_migrate=False)
    cache = GenerationCache(store.store, maxsize=2, ttl=60)
    for i in range(3):
        cache.get_or_compute(i, [space_dep("p:c")], lambda i=i: i)
    assert cache.stats()["size"] == 2 and cache.stats()["evictions"] == 1
    store.put("p:c:k", 1)
    calls = []
    cache.get_or_compute(2, [space_dep("p:c")], lambda: calls.append(1) or 2)
    assert calls == [1]
    store.close()
