"""ColumnCache: typed columns built from LMDB rows, kept current across handles, processes and threads."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import orjson
import pytest

from engine import _query
from engine.columns import (
    MISSING_BOOL,
    MISSING_CODE,
    MISSING_INT,
    NARROW_CODES,
    SCHEMAS,
    ZONE_ROWS,
    ColumnCache,
    schema_for,
)
from engine.errors import UnknownFieldError, ValidationError
from engine.local import LocalStore


def append_rows(store: LocalStore, stream: str, rows: list[object]) -> None:
    with store.write() as batch:
        for row in rows:
            data = row if isinstance(row, bytes) else orjson.dumps(row)
            store.append(batch, stream, data)


def action(i: int, **over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "action_id": f"a{i}",
        "timestamp": 1000.0 + i,
        "action_type": ["code_edit", "file_search", "verification"][i % 3],
        "state_before": {"nested": [1, 2]},
        "state_after": {},
        "parameters": {},
        "result": {},
        "reward": i / 10,
        "confidence": 0.5,
        "execution_time": 0.1,
        "environment": "development",
        "context_hash": None,
    }
    row.update(over)
    return row


@pytest.fixture
def store(tmp_path):
    s = LocalStore(tmp_path / "db", durable=False)
    yield s
    s.close()


def test_columns_are_typed_read_only_and_row_aligned(store):
    append_rows(store, "rl_actions", [action(i) for i in range(10)])
    cols = ColumnCache(store).get("rl_actions")
    assert len(cols) == cols.n == cols.generation == 10
    assert set(cols.fields) == set(SCHEMAS["rl_actions"].columns)
    ts, codes, offset = cols.column("timestamp"), cols.column("action_type"), cols.column("offset")
    assert ts.dtype == np.float64 and codes.dtype == np.int32 and offset.dtype == np.int64
    assert ts.tolist() == [1000.0 + i for i in range(10)] and offset.tolist() == list(range(10))
    names = cols.categories("action_type")
    assert [names[c] for c in codes.tolist()] == [action(i)["action_type"] for i in range(10)]
    assert cols.code("action_type", "file_search") == codes[1] and cols.code("action_type", "nope") is None
    assert cols.code("context_hash", None) == MISSING_CODE
    assert set(cols.column("context_hash").tolist()) == {-1}
    assert cols.kind("reward") == "float" and cols.ncodes("environment") == 1
    with pytest.raises(ValueError):
        ts[0] = 1.0  # handed-out arrays are read-only views
    with pytest.raises(UnknownFieldError):
        cols.column("reard")


def test_missing_and_malformed_values(store):
    rows = [
        action(0, reward=None, action_type=5, environment=None),
        action(1, reward="0.5", confidence=True, action_type="code_edit"),
        {"timestamp": "yesterday"},
        [1, 2, 3],
        "just a string",
    ]
    append_rows(store, "rl_actions", rows)
    append_rows(store, "rl_actions", [b"\x00not json"])
    cols = ColumnCache(store).get("rl_actions")
    reward = cols.column("reward")
    assert np.isnan(reward[0]) and np.isnan(reward[1])  # a string is not a number, even a numeric one
    assert cols.column("confidence")[1] == 1.0
    assert cols.column("action_type").tolist() == [MISSING_CODE, 0, -1, -1, -1, -1]
    assert np.isnan(cols.column("timestamp")[2:]).all()
    assert cols.n == 6


def test_int_and_bool_columns(store):
    append_rows(
        store,
        "verifier_metrics",
        [
            {"verifier_name": "v", "checks_performed": 3, "issues_found": 1, "timestamp": 1.0},
            {"verifier_name": "w", "checks_performed": 4.0, "issues_found": 2.5, "timestamp": 2},
            b'{"verifier_name": "v", "checks_performed": null, "issues_found": 1180591620717411303424, '
            b'"timestamp": 3.0}',
        ],
    )
    append_rows(store, "patch_history", [{"applied": True}, {"applied": False}, {"applied": 1}, {}])
    cache = ColumnCache(store)
    v = cache.get("verifier_metrics")
    assert v.column("checks_performed").tolist() == [3, 4, MISSING_INT]
    assert v.column("issues_found").tolist() == [1, MISSING_INT, MISSING_INT]
    assert v.column("timestamp").tolist() == [1.0, 2.0, 3.0]
    p = cache.get("patch_history")
    assert p.column("applied").dtype == np.uint8
    assert p.column("applied").tolist() == [1, 0, MISSING_BOOL, MISSING_BOOL]


def test_unknown_streams_get_timestamp_and_offset(store):
    append_rows(store, "my_events", [{"timestamp": 5.0, "x": 1}, {"x": 2}])
    cache = ColumnCache(store)
    cols = cache.get("my_events")
    assert cols.fields == ("timestamp", "offset")
    assert cache.schema("my_events").columns == schema_for("my_events").columns
    assert cols.column("timestamp")[0] == 5.0 and np.isnan(cols.column("timestamp")[1])
    assert cache.get("empty_stream").n == 0
    with pytest.raises(ValidationError):
        cache.get("bad/name")


def test_incremental_loads_keep_old_snapshots_intact(store):
    cache = ColumnCache(store, page_rows=7)  # several pages per load
    append_rows(store, "rl_actions", [action(i) for i in range(20)])
    first = cache.get("rl_actions")
    assert cache.get("rl_actions") is first  # nothing new: the same snapshot
    append_rows(store, "rl_actions", [action(i, action_type="tool_selection") for i in range(20, 3000)])
    second = cache.get("rl_actions")
    assert (first.n, second.n, cache.generation("rl_actions")) == (20, 3000, 3000)
    assert first.column("timestamp").shape == (20,) and first.ncodes("action_type") == 3
    assert first.code("action_type", "tool_selection") is None
    assert second.code("action_type", "tool_selection") == 3
    assert second.column("offset").tolist() == list(range(3000))
    assert second.column("timestamp").tolist() == [1000.0 + i for i in range(3000)]


def test_zone_maps_bound_every_block(store):
    ts = [float(i % 5000) if i % 97 else None for i in range(2 * ZONE_ROWS + 300)]
    cache = ColumnCache(store, page_rows=500)
    append_rows(store, "rl_actions", [action(i, timestamp=t) for i, t in enumerate(ts[:1500])])
    cache.get("rl_actions")
    append_rows(store, "rl_actions", [action(i, timestamp=t) for i, t in enumerate(ts[1500:], 1500)])
    cols = cache.get("rl_actions")
    lo, hi = cols.zones("timestamp")
    assert lo.shape == hi.shape == (3,)
    for b in range(3):
        block = np.array([np.nan if t is None else t for t in ts[b * ZONE_ROWS : (b + 1) * ZONE_ROWS]])
        assert lo[b] == np.nanmin(block) and hi[b] == np.nanmax(block)
    assert cols.zones("action_type") is None


def test_rows_appended_through_another_handle_are_picked_up(store):
    other = LocalStore(store.path, durable=False)
    try:
        cache = ColumnCache(store)
        append_rows(store, "rl_actions", [action(0)])
        assert cache.get("rl_actions").n == 1
        append_rows(other, "rl_actions", [action(1), action(2)])
        assert cache.get("rl_actions").column("reward").tolist() == [0.0, 0.1, 0.2]
    finally:
        other.close()


def test_rows_appended_by_another_process_are_picked_up(store):
    cache = ColumnCache(store)
    append_rows(store, "rl_actions", [action(0)])
    assert cache.get("rl_actions").n == 1
    script = (
        "import sys, orjson\n"
        "from engine.local import LocalStore\n"
        "s = LocalStore(sys.argv[1], durable=False)\n"
        "with s.write() as b:\n"
        "    for i in range(1, 4):\n"
        "        s.append(b, 'rl_actions', orjson.dumps({'timestamp': 1000.0 + i, 'reward': i / 10}))\n"
        "s.close()\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", script, store.path], cwd=root, check=True, timeout=60)
    cols = cache.get("rl_actions")
    assert cols.n == 4 and cols.column("reward").tolist() == [0.0, 0.1, 0.2, 0.3]


def test_concurrent_readers_see_consistent_snapshots(store):
    cache = ColumnCache(store, page_rows=64)
    errors: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            cols = cache.get("rl_actions")
            n = cols.n
            off, ts = cols.column("offset"), cols.column("timestamp")
            want_ts = [1000.0 + i for i in range(n)]
            if off.shape != (n,) or off.tolist() != list(range(n)) or ts.tolist() != want_ts:
                errors.append(f"inconsistent snapshot of {n} rows")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for start in range(0, 2000, 100):
            append_rows(store, "rl_actions", [action(i) for i in range(start, start + 100)])
    finally:
        done.set()
        for t in threads:
            t.join()
    assert errors == []
    assert cache.get("rl_actions").n == 2000


def test_drop_rebuilds(store):
    cache = ColumnCache(store)
    append_rows(store, "rl_actions", [action(i) for i in range(3)])
    first = cache.get("rl_actions")
    cache.drop("rl_actions")
    assert cache.generation("rl_actions") == 0
    again = cache.get("rl_actions")
    assert again is not first and again.column("reward").tolist() == first.column("reward").tolist()
    cache.drop()
    assert cache.generation("rl_actions") == 0


def test_rows_by_offset(store):
    append_rows(store, "rl_actions", [action(i) for i in range(100)])
    cache = ColumnCache(store)
    offsets = [97, 3, 4, 50, 3, 200, 0]
    rows = cache.rows("rl_actions", offsets)
    assert [r["action_id"] for r in rows] == ["a97", "a3", "a4", "a50", "a3", "a0"]  # 200 is past the end
    assert cache.rows("rl_actions", []) == [] and cache.rows("nothing", [0]) == []


def test_big_loads_pause_the_collector_and_restore_it(store, monkeypatch):
    import gc

    from engine import columns

    monkeypatch.setattr(columns, "GC_PAUSE_ROWS", 5)
    seen: list[bool] = []
    real_append = columns._StreamState.append_arrays  # where the native and reference paths meet

    def spy(self, count, arrays):
        seen.append(gc.isenabled())
        real_append(self, count, arrays)

    monkeypatch.setattr(columns._StreamState, "append_arrays", spy)
    append_rows(store, "rl_actions", [action(i) for i in range(20)])
    assert gc.isenabled()
    assert ColumnCache(store).get("rl_actions").n == 20
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        assert ColumnCache(store).get("rl_actions").n == 20
        assert not gc.isenabled()  # a collector the application turned off stays off
    finally:
        gc.enable()
    append_rows(store, "rl_actions", [action(20)])
    cache = ColumnCache(store)
    cache.get("rl_actions")
    seen.clear()
    append_rows(store, "rl_actions", [action(21)])
    assert cache.get("rl_actions").n == 22 and seen == [True]  # small increments do not pause it


def test_uncommitted_rows_stay_out_of_the_columns(store):
    cache = ColumnCache(store)
    append_rows(store, "rl_actions", [action(0)])
    with pytest.raises(RuntimeError):
        with store.write() as batch:
            store.append(batch, "rl_actions", orjson.dumps(action(1, reward=9.0)))
            assert cache.get("rl_actions").n == 1  # the open batch's row is not committed yet
            raise RuntimeError("roll back")
    append_rows(store, "rl_actions", [action(2)])
    cols = cache.get("rl_actions")
    assert cols.column("reward").tolist() == [0.0, 0.2]
    with store.write() as batch:
        store.append(batch, "rl_actions", orjson.dumps(action(3)))
        assert cache.get("rl_actions").n == 2
    assert cache.get("rl_actions").column("reward").tolist() == [0.0, 0.2, 0.3]


def test_columns_keep_narrow_companions_until_codes_outgrow_int8(tmp_path):
    store = LocalStore(tmp_path / "db", durable=False)
    try:
        rows = [{"timestamp": 1000.0 + i, "reward": i / 7, "action_type": f"t{i % 5}"} for i in range(3000)]
        with store.write() as batch:
            for row in rows:
                store.append(batch, "rl_actions", orjson.dumps(row))
        cache = ColumnCache(store)
        snap = cache.get("rl_actions")
        sketch, small = snap.narrow("reward"), snap.narrow("action_type")
        assert sketch.dtype == np.float32 and np.array_equal(sketch, snap.column("reward").astype(np.float32))
        assert small.dtype == np.int8 and np.array_equal(small, snap.column("action_type"))
        assert snap.narrow("offset") is None and not sketch.flags.writeable
        pred = snap.predicate(("range", "reward", 0.7, 1.0))
        assert pred[5] is sketch and snap.predicate(("eq", "action_type", "t1"))[3] is small
        with store.write() as batch:  # more distinct strings than int8 codes
            for i in range(NARROW_CODES + 5):
                store.append(batch, "rl_actions", orjson.dumps({"timestamp": 1.0, "action_type": f"new{i}"}))
        later = cache.get("rl_actions")
        assert later.narrow("action_type") is None and later.narrow("reward").shape[0] == later.n
        assert snap.narrow("action_type") is small  # an old snapshot keeps its companions
        pred = later.predicate(("in", "action_type", ["t1", f"new{NARROW_CODES}"]))
        assert pred[3] is None
        assert _query.select(later.n, [pred])[1] == 600 + 1
    finally:
        store.close()
