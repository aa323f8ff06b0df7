"""QueryBuilder on both of its paths: over an engine stream's columns and on in-memory records or dicts
(the kernels themselves are held to their reference in tests/test_scan.py)."""

from __future__ import annotations

import dataclasses
import datetime
import random

import pytest

import engine
from engine import query as q
from engine.errors import UnknownFieldError, ValidationError
from engine.models import ActionRecord, ActionType, Environment, LogEntry


def make_actions(count: int, seed: int = 0) -> list[ActionRecord]:
    rnd = random.Random(seed)
    base = 1.7e9
    return [
        ActionRecord(
            action_id=f"a{i:05d}",
            timestamp=base + i + rnd.choice([0.0, 0.5]),
            action_type=rnd.choice(list(ActionType)[:4]),
            state_before={},
            state_after={},
            parameters={"i": i},
            result={},
            reward=rnd.choice([0.1, 0.7, 0.7, 0.8, 1.0, 0.35]),
            confidence=rnd.random(),
            execution_time=rnd.random(),
            environment=rnd.choice([Environment.DEVELOPMENT, Environment.PRODUCTION]),
            context_hash=rnd.choice([None, "h1", "h2"]),
        )
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    eng = engine.open(tmp_path_factory.mktemp("q"))
    actions = make_actions(2500)
    eng.record_actions_batch(actions)
    yield eng, actions
    eng.close()


def seed_query(b):
    return (
        b.filter_by_field("action_type", ActionType.CODE_EDIT)
        .filter_by_range("reward", 0.7, 1.0)
        .sort_by_field("timestamp", reverse=True)
        .limit(10)
    )


def ids(result):
    return [r.action_id if hasattr(r, "action_id") else r["action_id"] for r in result.data]


def test_seed_query_same_on_engine_records_and_dicts(store):
    eng, actions = store
    on_engine = seed_query(eng.query("rl_actions")).execute()
    on_records = seed_query(q.QueryBuilder()).execute(actions)
    on_dicts = seed_query(q.QueryBuilder(object())).execute([a.to_dict() for a in actions])
    assert on_engine.total_count == on_records.total_count == on_dicts.total_count > 10
    assert ids(on_engine) == ids(on_records) == ids(on_dicts)
    assert all(isinstance(r, ActionRecord) for r in on_engine.data)
    assert on_engine.execution_time >= 0 and not on_engine.cached


BUILDERS = [
    lambda b: b.filter_by_field("environment", "production").sort_by_field("reward").offset(3).limit(7),
    lambda b: b.filter_in("action_type", [ActionType.CODE_EDIT, "file_search"]).sort_by_field("reward", True),
    lambda b: b.filter_by_field("context_hash", None).sort_by_field("action_type").limit(30),
    lambda b: b.filter_by_range("reward", None, 0.5).filter_by_range("confidence", 0.2, None).limit(50),
    lambda b: b.filter_by_range("action_type", "code_analysis", "code_edit").sort_by_field("context_hash"),
    lambda b: b.filter_by_field("reward", 0.7).sort_by_field("confidence", reverse=True).offset(5),
    lambda b: b.filter_by_range("reward", "a", "b"),
    lambda b: b.filter_by_field("action_type", "no_such_type"),
    lambda b: b.filter_by_field("action_id", "a00042"),
    lambda b: b.filter_in("reward", [0.1, 1.0]).sort_by_field("timestamp").limit(5),
    lambda b: b.sort_by_field("action_id", reverse=True).limit(4),
    lambda b: b.filter(lambda a: a.parameters["i"] % 7 == 0).sort_by_field("reward", True).limit(9),
    lambda b: b.sort_by(lambda a: (a.reward, -a.timestamp), reverse=True).limit(6),
    lambda b: b.offset(2490),
]


@pytest.mark.parametrize("build", BUILDERS)
def test_engine_path_equals_in_memory_path(store, build):
    eng, actions = store
    on_engine = build(eng.query("rl_actions")).execute()
    in_memory = build(q.QueryBuilder()).execute(actions)
    assert on_engine.total_count == in_memory.total_count
    assert ids(on_engine) == ids(in_memory)
    assert build(eng.query("rl_actions")).count() == in_memory.total_count


def test_count_and_aggregate_match_the_in_memory_path(store):
    eng, actions = store
    b = eng.query("rl_actions").filter_by_field("environment", Environment.PRODUCTION)
    ref = q.QueryBuilder().filter_by_field("environment", Environment.PRODUCTION)
    assert b.count() == ref.count(actions)
    got, want = b.aggregate("reward"), ref.aggregate("reward", data=actions)
    assert got["count"] == want["count"] and got["min"] == want["min"] and got["max"] == want["max"]
    assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)
    by = b.aggregate("reward", by="action_type")
    by_ref = ref.aggregate("reward", by="action_type", data=actions)
    assert set(by) == set(by_ref) and all(by[k]["count"] == by_ref[k]["count"] for k in by)
    assert eng.query("rl_actions").filter_by_field("action_type", "nope").aggregate("reward")["mean"] is None


def test_in_memory_path_never_mutates_and_tolerates_none():
    actions = make_actions(50, seed=3)
    data = list(reversed(actions))
    before = list(data)
    res = q.QueryBuilder().sort_by_field("timestamp").execute(data)
    assert data == before and res.data[0].action_id == "a00000"
    rows = [{"reward": None, "k": 1}, {"reward": 0.5, "k": 2}, {"reward": "x", "k": 3}]
    assert [r["k"] for r in q.QueryBuilder().filter_by_range("reward", 0, 1).execute(rows).data] == [2]
    res = q.QueryBuilder().sort_by_field("reward", reverse=True).execute(rows[:2])
    assert [r["k"] for r in res.data] == [2, 1]


def test_unknown_fields_raise_before_anything_runs(store):
    eng, actions = store
    with pytest.raises(UnknownFieldError):
        eng.query("rl_actions").filter_by_field("rewrd", 1)
    with pytest.raises(UnknownFieldError):
        eng.query("rl_actions").sort_by_field("nope")
    calls = []
    b = q.QueryBuilder().filter(lambda a: calls.append(a) or True).filter_by_range("nope", 0, 1)
    with pytest.raises(UnknownFieldError):
        b.execute(actions)
    assert calls == []
    with pytest.raises(UnknownFieldError):
        q.QueryBuilder().aggregate("nope", data=[{"a": 1}])


def test_builder_without_engine_stream_needs_data():
    b = q.QueryBuilder(object()).limit(1)
    assert b.execute([{"a": 1}, {"a": 2}]).data == [{"a": 1}]
    with pytest.raises(ValidationError):
        b.execute()
    for bad in (lambda: b.limit(-1), lambda: b.offset(True), lambda: b.filter(3), lambda: b.since("x")):
        with pytest.raises(ValidationError):
            bad()


def test_since_and_time_ranges(tmp_path):
    with engine.open(tmp_path) as eng:
        eng.append("custom", {"timestamp": 1.0, "v": "old"})
        eng.append("custom", {"timestamp": datetime.datetime.now().timestamp(), "v": "new"})
        eng.append("custom", [1, 2])  # a row that is not an object
        assert [r["v"] for r in eng.query("custom").since(hours=1).execute().data] == ["new"]
        start = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        end = start + datetime.timedelta(seconds=2)
        res = eng.query("custom").filter_by_time_range("timestamp", start, end).execute()
        assert res.data == [{"timestamp": 1.0, "v": "old"}]
        assert eng.query("custom").filter_by_field("v", "new").count() == 1  # free-form rows: decoded


def test_summary_streams_return_dicts_and_logs_return_entries(tmp_path):
    with engine.open(tmp_path) as eng:
        levels = ["INFO" if i % 3 == 0 else "ERROR" for i in range(10)]
        env = Environment.LOCAL
        entries = [LogEntry(f"l{i}", 1.0 + i, lv, "src", "m", {}, env) for i, lv in enumerate(levels)]
        eng.log_batch(entries)
        b = eng.query("system_logs").filter_by_field("level", "ERROR").sort_by_field("timestamp", True)
        res = b.execute()
        assert res.total_count == 6 and [e.log_id for e in res.data[:2]] == ["l8", "l7"]
        assert eng.query("system_logs").aggregate("timestamp", by="level")["INFO"]["count"] == 4
        with pytest.raises(UnknownFieldError):
            eng.query("signature_metrics").filter_by_field("memory_usage", "1")


def test_cache_key_and_result_to_dict(store):
    eng, _ = store
    k1, k2 = seed_query(eng.query("rl_actions")).cache_key(), seed_query(eng.query("rl_actions")).cache_key()
    assert k1 == k2 and hash(k1) == hash(k2)
    assert seed_query(eng.query("rl_actions")).offset(1).cache_key() != k1
    assert eng.query("rl_actions").filter_in("action_type", ["a", "b"]).cache_key() == (
        eng.query("rl_actions").filter_in("action_type", ["b", "a"]).cache_key()
    )
    assert seed_query(eng.query("rl_actions")).filter(bool).cache_key() is None
    assert eng.query("rl_actions").sort_by(len).cache_key() is None
    assert q.QueryBuilder().cache_key() is None
    res = seed_query(eng.query("rl_actions")).execute()
    d = res.to_dict()
    assert d["total_count"] == res.total_count and d["data"][0] == res.data[0].to_dict()
    assert dataclasses.replace(res, cached=True).to_dict()["cached"] is True


def test_engine_query_sees_new_rows(tmp_path):
    with engine.open(tmp_path) as eng:
        eng.record_actions_batch(make_actions(5))
        b = eng.query("rl_actions")
        assert b.count() == 5
        eng.record_actions_batch(make_actions(3, seed=9))
        assert eng.query("rl_actions").count() == 8
        assert eng.columns.get("rl_actions").generation == 8
