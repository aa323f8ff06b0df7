"""The query kernel against its numpy/Python reference, and QueryBuilder on both of its paths."""

from __future__ import annotations

import dataclasses
import datetime
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine import _query as native
from engine import query as q
from engine.columns import MISSING_INT, ZONE_ROWS
from engine.errors import UnknownFieldError, ValidationError
from engine.models import ActionRecord, ActionType, Environment, LogEntry

# ---------------------------------------------------------------------------- kernel vs reference

# float32 sketches round: include values next to a bound, past float32's range and below its smallest
F32_EDGES = [0.7, np.nextafter(0.7, 1.0), np.nextafter(0.7, 0.0), 3.5e38, 3.4028235e38, 1e-45, 1e-50]
FLOATS = [0.0, -0.0, 0.25, 0.5, 0.5, 1.0, -3.0, np.nan, np.inf, -np.inf, 1e300, *F32_EDGES]


def zones_of(col: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    nb = (n + ZONE_ROWS - 1) // ZONE_ROWS
    pad = np.full(nb * ZONE_ROWS, np.nan)
    pad[:n] = col[:n]
    blocks = pad.reshape(nb, ZONE_ROWS)
    return np.fmin.reduce(blocks, axis=1, initial=np.inf), np.fmax.reduce(blocks, axis=1, initial=-np.inf)


@st.composite
def tables(draw, max_rows=300):
    n = draw(st.integers(0, max_rows))
    extra = draw(st.integers(0, 3))  # columns may be longer than n
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m = n + extra
    f = np.array(FLOATS)[rng.integers(0, len(FLOATS), m)]
    if draw(st.booleans()):
        f = np.cumsum(rng.random(m)) if m else f  # a growing, timestamp-like column
    ints = rng.integers(-3, 4, m).astype(np.int64)
    ints[rng.random(m) < 0.2] = MISSING_INT
    codes = rng.integers(-2, 7, m).astype(np.int32)
    small = np.array([0, 1, 1, 255, 7], dtype=np.uint8)[rng.integers(0, 5, m)]
    return n, {"f": f, "i": ints, "c": codes, "b": small}


def narrow(cols, field):
    """The narrow companion engine.columns keeps: an int8 copy of codes, a float32 sketch of floats."""
    with np.errstate(over="ignore"):
        return cols[field].astype(np.int8 if field == "c" else np.float32)


def predicate(draw, cols, n):
    kind = draw(st.sampled_from(["c_in", "c_eq", "b_in", "f_range", "i_range", "f_eq", "i_eq", "missing"]))
    bounds = [-1.5, -1, 0, 0.25, 0.5, 1, 2.5, float("nan"), 1e300, *F32_EDGES]
    bound = st.one_of(st.none(), st.sampled_from(bounds))
    companion = draw(st.booleans())
    if kind in ("c_in", "c_eq"):
        code = st.lists(st.integers(-2, 8), max_size=4) if kind == "c_in" else st.integers(-1, 7)
        spec = (kind[2:], cols["c"], draw(code))
        return (*spec, narrow(cols, "c")) if companion else spec
    if kind == "b_in":
        return ("in", cols["b"], draw(st.lists(st.sampled_from([-1, 0, 1, 7]), max_size=3)))
    if kind == "f_range":
        spec = ("range", cols["f"], draw(bound), draw(bound))
        zones = zones_of(cols["f"], n) if draw(st.booleans()) else None
        return (*spec, zones, narrow(cols, "f")) if companion else (*spec, zones) if zones else spec
    if kind == "i_range":
        return ("range", cols["i"], draw(bound), draw(bound))
    if kind == "f_eq":
        value = draw(st.sampled_from([0.5, 0.0, 1e300, 0.7, 3.5e38, None]))
        spec = ("eq", cols["f"], value)
        return (*spec, narrow(cols, "f")) if companion and value is not None else spec
    if kind == "i_eq":
        return ("eq", cols["i"], draw(st.sampled_from([-1, 0, 3, None, 2.0, 2.5])))
    return ("missing", cols[draw(st.sampled_from(["f", "i", "c", "b"]))])


@st.composite
def queries(draw, max_rows=300):
    n, cols = draw(tables(max_rows))
    preds = [predicate(draw, cols, n) for _ in range(draw(st.integers(0, 3)))]
    sort = draw(st.sampled_from([None, "f", "i", "c", "b"]))
    rank = np.array(draw(st.permutations(range(5))), dtype=np.float64) if sort == "c" else None
    return dict(
        n=n,
        preds=preds,
        sort=None if sort is None else cols[sort],
        descending=draw(st.booleans()),
        sort_rank=rank,
        offset=draw(st.integers(0, 20)),
        limit=draw(st.integers(-1, 25)),
        sort_zones=zones_of(cols["f"], n) if sort == "f" and draw(st.booleans()) else None,
        threads=draw(st.integers(0, 4)),
    )


def run_both(fn_native, fn_ref, kw):
    return fn_native(**kw), fn_ref(**kw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries())
def test_select_matches_reference(kw):
    (rows, total), (ref_rows, ref_total) = run_both(native.select, q.select_reference, kw)
    assert total == ref_total
    assert rows.dtype == np.int64
    assert rows.tolist() == ref_rows.tolist()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries(max_rows=5000))
def test_select_matches_reference_across_blocks(kw):
    (rows, total), (ref_rows, ref_total) = run_both(native.select, q.select_reference, kw)
    assert (rows.tolist(), total) == (ref_rows.tolist(), ref_total)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.data())
def test_aggregates_match_reference(table, data):
    n, cols = table
    preds = [predicate(data.draw, cols, n) for _ in range(data.draw(st.integers(0, 2)))]
    value = data.draw(st.sampled_from([None, "f", "i", "b"]))
    vcol = None if value is None else cols[value]
    got = native.aggregate(n, preds, vcol)
    ref = q.aggregate_reference(n, preds, vcol)
    assert got[:2] == ref[:2]
    np.testing.assert_allclose(got[2:], ref[2:], rtol=1e-12, equal_nan=True)
    group = data.draw(st.sampled_from(["c", "b"]))
    ngroups = data.draw(st.integers(0, 8))
    got_by = native.aggregate_by(n, preds, cols[group], ngroups, vcol)
    ref_by = q.aggregate_by_reference(n, preds, cols[group], ngroups, vcol)
    for a, b in zip(got_by, ref_by, strict=True):
        assert a.shape == (ngroups,)
        np.testing.assert_allclose(a, b, rtol=1e-12, equal_nan=True)


def test_ties_follow_pythons_stable_sorted_in_both_directions():
    keys = np.array([1.0, 2.0, 1.0, 2.0, np.nan, 1.0])
    for desc in (True, False):
        rows, total = native.select(6, [], keys, desc)
        present = sorted((i for i in range(6) if not np.isnan(keys[i])), key=keys.__getitem__, reverse=desc)
        assert rows.tolist() == [*present, 4]
        assert total == 6
    assert native.select(6, [], keys, True)[0].tolist() == [1, 3, 0, 2, 5, 4]  # reverse=True keeps 1 before 3


def test_deep_pages_agree():
    rng = np.random.default_rng(7)
    n = 70_000
    col = rng.integers(0, 50, n).astype(np.float64)
    col[rng.random(n) < 0.01] = np.nan
    codes = rng.integers(0, 3, n).astype(np.int32)
    for offset, limit in ((0, -1), (60_000, 100), (10, 65_537)):
        kw = dict(n=n, preds=[("in", codes, [0, 2])], sort=col, descending=True, offset=offset, limit=limit)
        (rows, total), (ref_rows, ref_total) = run_both(native.select, q.select_reference, kw)
        assert total == ref_total and np.array_equal(rows, ref_rows)


@pytest.mark.parametrize("keep", [0.001, 0.03, 0.2, 0.9])
def test_sparse_and_dense_filtering_agree(keep):
    rng = np.random.default_rng(11)
    n = 5 * ZONE_ROWS + 77
    first = (rng.random(n) < keep).astype(np.int32)  # code 1 on a `keep` fraction of the rows
    vals = rng.random(n)
    vals[rng.random(n) < 0.05] = np.nan
    ints = rng.integers(0, 5, n).astype(np.int64)
    preds = [
        ("eq", first, 1),
        ("range", vals, 0.1, 0.8),
        ("in", ints.astype(np.int32), [1, 3]),
        ("missing", vals),
    ]
    for k in (2, 3):
        for sort in (None, vals):
            kw = dict(n=n, preds=preds[:k], sort=sort, descending=True, offset=1, limit=40)
            (rows, total), (ref_rows, ref_total) = run_both(native.select, q.select_reference, kw)
            assert (rows.tolist(), total) == (ref_rows.tolist(), ref_total)
    assert native.select(n, [preds[0], preds[3]])[1] == int(((first == 1) & np.isnan(vals)).sum())


def test_zone_maps_skip_blocks_without_changing_answers():
    n = 20 * ZONE_ROWS + 17
    ts = 1.7e9 + np.arange(n, dtype=np.float64)
    ts[5 * ZONE_ROWS : 6 * ZONE_ROWS] = np.nan  # an all-missing block
    zones = zones_of(ts, n)
    codes = (np.arange(n) % 9).astype(np.int32)
    since = ("range", ts, ts[n - 1] - 3000, None, zones)
    rows, total = native.select(n, [since, ("eq", codes, 1)], ts, True, None, 0, 5, zones)
    ref_rows, ref_total = q.select_reference(n, [since[:4], ("eq", codes, 1)], ts, True, None, 0, 5)
    assert (rows.tolist(), total) == (ref_rows.tolist(), ref_total)
    assert rows.tolist()[0] == max(i for i in range(n) if i % 9 == 1)


@pytest.mark.parametrize(
    "spec",
    [
        ("between", "col"),
        ("range", "col", "a", 1),
        ("in", "f64", [1]),
        ("range", "codes", 0, 1),
        ("eq",),
    ],
)
def test_bad_predicates_raise_validation_errors(spec):
    cols = {"col": np.zeros(4), "f64": np.zeros(4), "codes": np.zeros(4, np.int32)}
    spec = tuple(cols.get(x, x) if isinstance(x, str) else x for x in spec)
    for fn in (native.select, q.select_reference):
        with pytest.raises(ValidationError):
            fn(4, [spec])


def test_bad_columns_raise_validation_errors():
    for col in (np.zeros(3), np.zeros(10, np.float32), [1.0] * 10, np.zeros((10, 2))):
        with pytest.raises(ValidationError):
            native.select(10, [("missing", col)])
    with pytest.raises(ValidationError):
        native.select(10, [], np.zeros(10, np.int32))  # a code sort needs ranks
    with pytest.raises(ValidationError):
        native.select(2048, [("range", np.zeros(2048), 0, 1, (np.zeros(1), np.zeros(1)))])


def test_engine_pure_selects_the_reference_kernel():
    code = "import engine._query as n, engine.query as q; print(q.kernel is q._Reference, q.kernel is n)"
    root = Path(__file__).resolve().parents[1]
    for pure, want in (("1", "True False"), ("", "False True")):
        env = {**os.environ, "ENGINE_PURE": pure}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == want


# ---------------------------------------------------------------------------- QueryBuilder


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
