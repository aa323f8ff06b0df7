"""Tests for engine.sync against an in-memory RedDB behind httpx.MockTransport.

The fake applies the protocol (streams with server-assigned offsets, key-value upserts) and lets a
test inject the faults a real server cannot produce on demand: an append that lands but whose
answer is lost (a timeout after the commit), a reset before anything was applied, 401/500,
garbage bodies. The round trip against a real server lives in tests/integration/test_replication.py.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
import engine.cli
import engine.remote
import engine.sync
from engine.errors import AuthError, RemoteError, RemoteTimeoutError, StorageError, SyncError
from engine.models import (
    ActionType,
    AgentState,
    ContextState,
    Environment,
    create_action_record,
    create_log_entry,
)
from engine.remote import RedDBClient, remote_end
from engine.sync import Syncer, backoff_delay

TOKEN = "sync-t0ken-4f1e2d3c"
BASE = "http://reddb.test:8080"
NS = "dspy"
Fault = Callable[[httpx.Request, str, str], Any]


class FakeRedDB:
    """A RedDB in a dict, thread-safe, with a fault hook: fault(request, op, name) -> None or a fault."""

    def __init__(self, clamp: int = 1000) -> None:
        self.streams: dict[str, list[bytes]] = {}
        self.kv: dict[str, bytes] = {}
        self.log: list[tuple[str, str]] = []  # (op, name) of every request that reached us
        self.clamp = clamp
        self.fault: Fault | None = None
        self.lock = threading.Lock()

    def rows(self, stream: str) -> list[Any]:
        return [orjson.loads(v) for v in self.streams.get(stream, [])]

    def count(self, op: str) -> int:
        return sum(1 for o, _ in self.log if o == op)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        parts = [unquote(p) for p in request.url.raw_path.decode().split("?")[0].split("/")]
        if parts[1] == "health":
            op, name = "health", ""
        elif parts[2] == "kv":
            op, name = {"PUT": "put", "DELETE": "delete", "GET": "get"}[request.method], parts[4]
        else:
            op, name = parts[5], parts[4]
        with self.lock:
            self.log.append((op, name))
            fault = self.fault(request, op, name) if self.fault else None
            if fault == "reset":  # dropped before the server applied anything (still ambiguous)
                raise httpx.ReadError("connection reset by peer", request=request)
            if fault == "refused":
                raise httpx.ConnectError("connection refused", request=request)
            if isinstance(fault, httpx.Response):
                return fault
            resp = self._apply(request, op, name)
            if fault == "lost":  # applied, but the answer never arrives
                raise httpx.ReadTimeout("timed out", request=request)
            if fault == "garbage":
                return httpx.Response(200, content=b"<html>oops")
            return resp

    def _apply(self, request: httpx.Request, op: str, name: str) -> httpx.Response:
        if op == "health":
            return httpx.Response(200, json={"ok": True, "service": "reddb"})
        if op == "append":
            rows = self.streams.setdefault(name, [])
            rows.append(orjson.dumps(orjson.loads(request.content), option=orjson.OPT_INDENT_2))
            return httpx.Response(200, json={"ok": True, "offset": len(rows) - 1})
        if op == "read":
            start = int(request.url.params.get("start", 0))
            count = min(int(request.url.params.get("count", 100)), self.clamp)
            rows = self.streams.get(name, [])[start : start + count]
            body = [{"offset": start + i, "value": orjson.loads(v)} for i, v in enumerate(rows)]
            return httpx.Response(200, json=body)
        if op == "put":
            self.kv[name] = request.content
        elif op == "delete":
            self.kv.pop(name, None)
        else:
            return httpx.Response(200, content=self.kv[name]) if name in self.kv else httpx.Response(404)
        return httpx.Response(200, json={"ok": True})


@pytest.fixture
def fake() -> FakeRedDB:
    return FakeRedDB()


@pytest.fixture
def eng(tmp_path) -> Iterator[Any]:
    e = engine.open(tmp_path / "store", reddb_url=BASE, auto_sync=False, auto_migrate=False, durable=False)
    yield e
    e.close()


@pytest.fixture
def make_syncer(fake: FakeRedDB) -> Iterator[Callable[..., Syncer]]:
    made: list[tuple[Syncer, RedDBClient]] = []

    def make(e: Any, *, server: Any = None, token: str = TOKEN, **kw: Any) -> Syncer:
        client = RedDBClient(BASE, token=token, namespace=NS, transport=httpx.MockTransport(server or fake))
        kw.setdefault("lane_retries", 0)  # most tests look at one failure at a time
        kw.setdefault("backoff_base", 0.001)
        kw.setdefault("backoff_cap", 0.01)
        kw.setdefault("breaker_cooldown", 0.01)
        kw.setdefault("rng", random.Random(7))
        s = Syncer(e, client=client, **kw)
        made.append((s, client))
        return s

    yield make
    for s, client in made:
        s.stop()
        client.close()


def action(i: int) -> Any:
    return create_action_record(ActionType.CODE_EDIT, {"i": i}, {}, {}, {}, 0.5, 0.9, 0.1)


def until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return check()


def drain(s: Syncer, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while s.store.outbox_size():
        if time.monotonic() > deadline:
            raise AssertionError(f"outbox did not drain: {s.status()}")
        try:
            if not s.drain_once():
                time.sleep(0.002)  # every lane is backing off
        except RemoteError:
            pass


def local_rows(e: Any, stream: str) -> list[Any]:
    return [v for _, v in e.read(stream, 0, 100_000)]


# ---------------------------------------------------------------------- delivery
def test_appends_arrive_in_order_and_puts_collapse(eng, fake, make_syncer):
    acts = [action(i) for i in range(300)]
    with eng.batch():
        eng.record_actions_batch(acts)
        for i in range(50):
            eng.append("events", {"i": i})
            eng.put("cfg", {"v": i})
        eng.put("gone", 1)
        eng.delete("gone")
    s = make_syncer(eng, window=5000)
    assert s.drain_once() == 300 + 50 + 50 + 2
    assert fake.rows("rl_actions") == local_rows(eng, "rl_actions")
    assert [r["action_id"] for r in fake.rows("rl_actions")] == [a.action_id for a in acts]
    assert fake.rows("events") == [{"i": i} for i in range(50)]
    assert orjson.loads(fake.kv["cfg"]) == {"v": 49} and "gone" not in fake.kv
    assert fake.count("put") == 1 and fake.count("delete") == 1  # 50 puts of one key: one request
    st = s.status()
    assert (st["backlog"], st["sent"], st["duplicates_avoided"], st["last_error"]) == (0, 402, 0, None)


def test_small_window_and_ack_batches_still_deliver_everything_once(eng, fake, make_syncer):
    for i in range(120):
        eng.append(f"s{i % 3}", {"i": i})
    s = make_syncer(eng, window=7, ack_every=2)
    drain(s)
    for k in range(3):
        assert fake.rows(f"s{k}") == [{"i": i} for i in range(k, 120, 3)]


def test_lost_answer_after_commit_is_not_resent(eng, fake, make_syncer):
    for i in range(10):
        eng.append("events", {"i": i})
    fake.fault = lambda req, op, name: "lost" if op == "append" and req.content == b'{"i":4}' else None
    s = make_syncer(eng)
    with pytest.raises(RemoteTimeoutError):
        s.drain_once()
    assert s.store.outbox_size() == 6  # i=4 landed but was not acknowledged: still pending locally
    fake.fault = None
    drain(s)
    assert fake.rows("events") == [{"i": i} for i in range(10)]
    st = s.status()
    assert st["duplicates_avoided"] == 1 and st["sent"] == 9 and st["failures"] == 1
    assert "RemoteTimeoutError" in st["last_error"]


def test_reset_before_commit_is_resent(eng, fake, make_syncer):
    for i in range(5):
        eng.append("events", {"i": i})
    hits = {"n": 0}

    def fault(req: httpx.Request, op: str, name: str) -> Any:
        if op == "append" and req.content == b'{"i":2}' and hits["n"] == 0:
            hits["n"] += 1
            return "reset"
        return None

    fake.fault = fault
    s = make_syncer(eng)
    drain(s)
    assert fake.rows("events") == [{"i": i} for i in range(5)]
    assert s.status()["duplicates_avoided"] == 0 and s.status()["retries"] >= 1


def test_a_lane_retries_transient_failures_in_place(eng, fake, make_syncer):
    for i in range(30):
        eng.append("events", {"i": i})
    n = {"appends": 0}

    def fault(req: httpx.Request, op: str, name: str) -> Any:
        if op == "append":
            n["appends"] += 1
            return (
                ["lost", "reset", httpx.Response(502, text="bad gateway")][n["appends"] % 3]
                if n["appends"] % 5 == 0
                else None
            )
        return None

    fake.fault = fault
    s = make_syncer(eng, lane_retries=3)
    assert s.drain_once() == 30  # one round: every failure was retried within it
    assert fake.rows("events") == [{"i": i} for i in range(30)]
    st = s.status()
    assert st["failures"] == st["retries"] >= 5 and st["duplicates_avoided"] >= 1


def test_a_lane_gives_up_its_round_after_its_retries(eng, fake, make_syncer):
    eng.append("events", {"i": 0})
    fake.fault = lambda r, op, n: httpx.Response(500, text="down") if op == "append" else None
    s = make_syncer(eng, lane_retries=2)
    with pytest.raises(RemoteError):
        s.drain_once()
    assert fake.count("append") == 3 and s.status()["retries"] == 2 and eng.store.outbox_size() == 1


def test_readback_skips_other_agents_rows_and_matches_by_record_id(eng, fake, make_syncer):
    acts = [action(i) for i in range(6)]
    eng.record_actions_batch(acts)
    fake.streams["rl_actions"] = [b'{"action_id":"foreign-0"}']
    lost = {acts[2].action_id}

    def fault(req: httpx.Request, op: str, name: str) -> Any:
        if op == "append":
            fake.streams["rl_actions"].append(b'{"action_id":"foreign","note":"another agent"}')
            if orjson.loads(req.content)["action_id"] in lost:
                lost.clear()
                return "lost"
        return None

    fake.fault = fault
    s = make_syncer(eng)
    drain(s)
    mine = [r for r in fake.rows("rl_actions") if not r["action_id"].startswith("foreign")]
    assert [r["action_id"] for r in mine] == [a.action_id for a in acts]
    assert mine == local_rows(eng, "rl_actions")
    assert s.status()["duplicates_avoided"] == 1 and s.status()["reconciles"] >= 1


def test_plain_values_are_matched_by_canonical_value_not_bytes(eng, fake, make_syncer):
    # the fake stores re-indented JSON: only a decoded comparison recognises it
    eng.append("plain", {"b": [1, 2.5, None], "a": "x"})
    eng.append("plain", {"b": [1, 2.5, None], "a": "x"})  # equal values: matched in order
    eng.append("plain", 3)
    calls = {"n": 0}

    def fault(req: httpx.Request, op: str, name: str) -> Any:
        if op == "append":
            calls["n"] += 1
            return "lost" if calls["n"] in (1, 2) else None
        return None

    fake.fault = fault
    s = make_syncer(eng)
    drain(s)
    assert fake.rows("plain") == [{"b": [1, 2.5, None], "a": "x"}] * 2 + [3]
    assert s.status()["duplicates_avoided"] == 2


def test_same_context_id_twice_lands_twice(eng, fake, make_syncer):
    ctx = ContextState("ctx-1", 1.0, AgentState.IDLE, None, "/w", [], [], {}, {}, Environment.LOCAL)
    eng.store_context_state(ctx)
    eng.store_context_state(ctx)
    n = {"appends": 0}

    def fault(req: httpx.Request, op: str, name: str) -> Any:
        if op == "append":
            n["appends"] += 1
            return "lost" if n["appends"] == 1 else None
        return None

    fake.fault = fault
    s = make_syncer(eng)
    drain(s)
    assert [r["context_id"] for r in fake.rows("context_history")] == ["ctx-1", "ctx-1"]
    assert orjson.loads(fake.kv["dspy_agent:context:current"])["context_id"] == "ctx-1"


def test_crash_between_answer_and_delete_is_recovered_by_the_next_drainer(
    eng, fake, make_syncer, monkeypatch
):
    logs = [create_log_entry("INFO", "t", f"m{i}", {}) for i in range(40)]
    eng.log_batch(logs)
    first = make_syncer(eng, ack_every=10)
    real = Syncer._commit
    calls = {"n": 0}

    def crashy(self: Syncer, stream: Any, acked: Any, counter: str) -> int:
        calls["n"] += 1
        if calls["n"] >= 3:  # from the third delete transaction on, nothing commits (the process "died")
            raise StorageError("simulated crash before the delete committed")
        return real(self, stream, acked, counter)

    monkeypatch.setattr(Syncer, "_commit", crashy)
    with pytest.raises(StorageError):
        first.drain_once()
    monkeypatch.setattr(Syncer, "_commit", real)
    first.stop()
    assert len(fake.rows("system_logs")) > 40 - eng.store.outbox_size()  # landed but still pending
    second = make_syncer(eng)
    drain(second)
    assert [r["log_id"] for r in fake.rows("system_logs")] == [e.log_id for e in logs]
    assert second.status()["duplicates_avoided"] >= 1


def test_first_sync_to_a_busy_stream_stores_the_remote_end_as_floor(eng, fake, make_syncer):
    fake.streams["events"] = [b'{"other":%d}' % i for i in range(2500)]
    for i in range(3):
        eng.append("events", {"i": i})
    fake.fault = lambda req, op, name: "lost" if req.content == b'{"i":1}' else None
    s = make_syncer(eng)
    with pytest.raises(RemoteTimeoutError):
        s.drain_once()
    fake.fault = None
    reads: list[int] = []
    fake.fault = lambda req, op, name: reads.append(int(req.url.params["start"])) if op == "read" else None
    drain(s)
    assert reads and min(reads) >= 2501  # read back from after the acknowledged row, never from 0
    assert fake.rows("events")[2500:] == [{"i": 0}, {"i": 1}, {"i": 2}]


# ---------------------------------------------------------------------- bad servers
@pytest.mark.parametrize(
    ("answer", "error", "status"),
    [
        (httpx.Response(500, json={"ok": False, "error": "db locked"}), RemoteError, 500),
        (httpx.Response(503, text="upstream down"), RemoteError, 503),
        ("garbage", RemoteError, 200),  # applied, then an HTML body
        (httpx.Response(200, json=["not", "an", "append", "answer"]), RemoteError, 200),
        ("refused", RemoteError, None),
        ("lost", RemoteTimeoutError, None),
    ],
)
def test_bad_answers_are_typed_errors_and_keep_the_outbox(eng, fake, make_syncer, answer, error, status):
    for i in range(4):
        eng.append("events", {"i": i})
    fake.fault = lambda r, op, n: answer if op == "append" else None
    s = make_syncer(eng)
    errors = []
    for _ in range(4):
        try:
            s.drain_once()  # after a landed-but-unanswered append, a round may only read it back
        except RemoteError as exc:
            errors.append(exc)
        time.sleep(0.012)  # past the lane's backoff
    assert len(errors) >= 2 and all(type(e) is type(errors[0]) for e in errors)
    assert isinstance(errors[0], error) and {e.status for e in errors} == {status}
    assert eng.store.outbox_size() >= 1 and local_rows(eng, "events") == [{"i": i} for i in range(4)]
    fake.fault = None
    drain(s)
    assert fake.rows("events") == [{"i": i} for i in range(4)]  # answers lost after landing: no copies


def test_401_stops_the_syncer_and_flush_raises(eng, fake, make_syncer, caplog):
    caplog.set_level(logging.DEBUG)
    eng.append("events", {"i": 0})
    fake.fault = lambda r, op, n: httpx.Response(401, json={"ok": False, "error": f"unauthorized {TOKEN}"})
    s = make_syncer(eng)
    s.start()
    assert until(lambda: s.status()["state"] == "auth_failed")
    with pytest.raises(AuthError):
        s.flush(timeout=1)
    with pytest.raises(AuthError):
        s.drain_once()
    seen = len(fake.log)
    time.sleep(0.1)
    assert len(fake.log) == seen <= 2  # never retried in a loop
    st = s.status()
    assert st["running"] is False and "AuthError" in st["last_error"] and eng.store.outbox_size() == 1
    assert TOKEN not in repr(st) + repr(s) + caplog.text


def test_one_refused_stream_backs_off_while_others_flow(eng, fake, make_syncer):
    for i in range(30):
        eng.append("bad", {"i": i})
        eng.append("good", {"i": i})
    fake.fault = lambda r, op, name: httpx.Response(413, text="too large") if name == "bad" else None
    s = make_syncer(eng, window=10, backoff_base=0.05, backoff_cap=0.2, breaker_threshold=1000)
    s.start()
    assert until(lambda: eng.store.outbox_size() == 30), (s.status(), fake.log[-20:], len(fake.log))
    st = s.status()
    assert st["state"] in ("backing_off", "ok") and "413" in st["last_error"]
    assert eng.store.outbox_size() == 30 and fake.rows("bad") == []


def test_circuit_opens_probes_health_then_resumes(eng, fake, make_syncer):
    for i in range(20):
        eng.append(f"s{i % 4}", {"i": i})
    fake.fault = lambda r, op, name: "refused"
    s = make_syncer(eng, breaker_threshold=3, breaker_cooldown=0.05)
    s.start()
    assert until(lambda: s.status()["state"] == "circuit_open")
    assert until(lambda: fake.count("health") >= 2)
    fake.fault = None
    assert s.flush(timeout=10)
    assert sum(len(fake.rows(f"s{k}")) for k in range(4)) == 20 and s.status()["state"] == "ok"


def test_remote_end_finds_the_length_of_any_stream():
    @settings(max_examples=40, deadline=None)
    @given(n=st.integers(0, 30_000), clamp=st.sampled_from([7, 100, 1000]))
    def check(n: int, clamp: int) -> None:
        server = FakeRedDB(clamp=clamp)
        server.streams["s"] = [b"1"] * n
        with RedDBClient(BASE, transport=httpx.MockTransport(server)) as client:
            assert remote_end(client, "s") == n
        assert server.count("read") <= 60

    check()


def test_backoff_is_full_jitter_and_capped():
    rng = random.Random(3)
    for attempt in range(12):
        ceiling = min(2.0, 0.1 * 2**attempt)
        samples = [backoff_delay(attempt, 0.1, 2.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in samples)
        assert max(samples) > 0.5 * ceiling  # spread over the whole range, not a fixed delay
    assert backoff_delay(10_000, 0.1, 2.0, rng) <= 2.0


# ---------------------------------------------------------------------- lock, status, lifecycle
def test_only_one_drainer_per_store(eng, tmp_path, fake, make_syncer):
    eng.append("events", {"i": 0})
    first = make_syncer(eng)
    first.start()
    assert until(lambda: first.status()["draining"] and not eng.store.outbox_size())
    other = engine.open(tmp_path / "store", reddb_url=BASE, auto_sync=False, auto_migrate=False)
    try:
        second = make_syncer(other)
        with pytest.raises(SyncError, match="another process"):
            second.drain_once()
        st = second.status()
        assert st["draining"] is False and st["lock"] == "another process is draining"
        first.stop()
        eng.append("events", {"i": 1})
        assert second.drain_once() == 1  # the lock died with its holder
    finally:
        other.close()
    assert fake.rows("events") == [{"i": 0}, {"i": 1}]


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: fork with threads running
def test_a_forked_child_does_not_keep_the_lock(eng, tmp_path, fake, make_syncer):
    s = make_syncer(eng)
    s.start()
    assert until(lambda: s.status()["draining"])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then live on without touching anything
        os.write(w, b"1" if s._lock_fd is None else b"0")
        time.sleep(10)
        os._exit(0)
    try:
        os.close(w)
        assert os.read(r, 1) == b"1"
        assert s.status()["draining"]  # the parent still holds it
        s.stop()
        other = engine.open(tmp_path / "store", reddb_url=BASE, auto_sync=False, auto_migrate=False)
        try:
            eng.append("events", {"i": 1})
            assert make_syncer(other).drain_once() == 1  # the live child does not hold the lock
        finally:
            other.close()
    finally:
        os.close(r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_status_lag_and_counters_persist(tmp_path, fake, make_syncer):
    now = [1000.0]
    path = tmp_path / "lag"
    e = engine.open(path, reddb_url=BASE, auto_sync=False, auto_migrate=False, durable=False)
    s = make_syncer(e, clock=lambda: now[0], mark_every=0.0)
    assert s.status()["lag_seconds"] == 0.0
    e.append("events", {"i": 0})
    s.status()  # first seen at t=1000
    now[0] = 1012.5
    e.append("events", {"i": 1})
    st = s.status()
    assert st["lag_seconds"] == pytest.approx(12.5) and st["backlog"] == 2
    assert set(st) >= {"enabled", "running", "backlog", "lag_seconds", "last_error", "last_success_at"}
    assert set(st) >= {"sent", "retries", "duplicates_avoided", "state", "draining"}
    s.drain_once()
    assert s.status()["lag_seconds"] == 0.0 and s.status()["last_success_at"] == 1012.5
    s.stop()
    e.close()
    e2 = engine.open(path, reddb_url=BASE, auto_sync=False, auto_migrate=False)
    try:
        assert e2.sync_status()["sent"] == 2 and e2.sync_status()["state"] == "stopped"
    finally:
        e2.close()


def test_flush_drains_in_the_caller_when_not_running_and_times_out_when_down(eng, fake, make_syncer):
    eng.append("events", {"i": 0})
    s = make_syncer(eng)
    fake.fault = lambda r, op, n: "refused"
    assert s.flush(timeout=0.2) is False
    fake.fault = None
    assert s.flush(timeout=5) is True and fake.rows("events") == [{"i": 0}]


def test_flush_inside_a_write_batch_is_refused_not_deadlocked(eng, fake, make_syncer):
    s = make_syncer(eng)
    with eng.batch():
        eng.append("events", {"i": 0})
        with pytest.raises(SyncError, match="inside an open write batch"):
            s.flush(timeout=1)
        with pytest.raises(SyncError):
            s.drain_once()
    assert s.flush(timeout=5) and fake.rows("events") == [{"i": 0}]


def test_stop_keeps_pending_entries_and_start_resumes(eng, fake, make_syncer):
    gate = threading.Event()
    fake.fault = lambda r, op, n: gate.wait(5) and None  # every request waits for the gate
    for i in range(50):
        eng.append("events", {"i": i})
    s = make_syncer(eng)
    s.start()
    s.stop(timeout=0.5)
    assert s.status()["state"] == "stopped"
    gate.set()
    assert until(lambda: not s.status()["draining"])
    left = eng.store.outbox_size()
    assert len(fake.rows("events")) + left == 50
    s.start()
    assert s.flush(timeout=10) and fake.rows("events") == [{"i": i} for i in range(50)]


def test_engine_wires_the_syncer(tmp_path):
    e = engine.open(tmp_path / "w", reddb_url=BASE, auto_sync=False, auto_migrate=False)
    try:
        e.append("events", {"i": 1})
        st = e.sync_status()
        assert st["enabled"] and st["backlog"] == 1 and st["state"] == "stopped"
        assert TOKEN not in repr(e._syncer)
    finally:
        e.close()


# ---------------------------------------------------------------------- command line
@pytest.fixture
def cli(monkeypatch, fake, tmp_path):
    monkeypatch.setenv("REDDB_URL", BASE)
    monkeypatch.setenv("REDDB_TOKEN", TOKEN)

    class Mocked(RedDBClient):
        def __init__(self, url: str, **kw: Any) -> None:
            super().__init__(url, **{**kw, "transport": httpx.MockTransport(fake)})

    monkeypatch.setattr(engine.sync, "RedDBClient", Mocked)
    monkeypatch.setattr(engine.remote, "RedDBClient", Mocked)
    return tmp_path / "cli"


def test_cli_sync_reports_and_empties_the_outbox(cli, fake, capsys):
    with engine.open(cli, auto_sync=False, auto_migrate=False) as e:
        e.record_actions_batch([action(i) for i in range(25)])
    assert engine.cli.main(["--path", str(cli), "sync", "--timeout", "10"]) == 0
    assert "25 sent, 0 duplicates avoided, backlog 0" in capsys.readouterr().out
    assert len(fake.rows("rl_actions")) == 25


def test_cli_sync_gives_up_at_the_timeout(cli, fake, capsys):
    with engine.open(cli, auto_sync=False, auto_migrate=False) as e:
        e.append("events", {"i": 1})
    fake.fault = lambda r, op, n: httpx.Response(500, json={"ok": False, "error": "boom"})
    assert engine.cli.main(["--path", str(cli), "sync", "--timeout", "0.3"]) == 1
    err = capsys.readouterr().err
    assert "timed out with 1 entries pending" in err and "500" in err and TOKEN not in err


def test_cli_pull_imports_without_outbox_and_refuses_a_non_empty_stream(cli, fake, capsys):
    acts = [action(i) for i in range(2100)]
    fake.streams["rl_actions"] = [orjson.dumps(a.to_dict()) for a in acts]
    assert engine.cli.main(["--path", str(cli), "pull", "rl_actions", "--batch", "500"]) == 0
    assert "pulled 2,100 rows" in capsys.readouterr().out
    with engine.open(cli, auto_sync=False, auto_migrate=False) as e:
        assert e.store.outbox_size() == 0 and e.store.stream_length("rl_actions") == 2100
        assert e.get_action(acts[1234].action_id) == acts[1234]
    assert engine.cli.main(["--path", str(cli), "pull", "rl_actions"]) == 1
    assert "already has 2,100 rows" in capsys.readouterr().err
    assert engine.cli.main(["--path", str(cli), "pull", "rl_actions", "--force", "--start", "2000"]) == 0
    with engine.open(cli, auto_sync=False, auto_migrate=False) as e:
        assert e.store.stream_length("rl_actions") == 2200 and e.store.outbox_size() == 0


def test_cli_pull_that_fails_midway_says_where_to_resume(cli, fake, capsys):
    fake.streams["events"] = [b'{"i":%d}' % i for i in range(2500)]
    boom = httpx.Response(500, text="boom")
    fake.fault = lambda r, op, n: boom if r.url.params.get("start") == "2000" else None
    assert engine.cli.main(["--path", str(cli), "pull", "events", "--batch", "300"]) == 1
    err = capsys.readouterr().err
    assert "pull stopped after 1,800 rows" in err and "--force --start 1800" in err
    fake.fault = None
    assert engine.cli.main(["--path", str(cli), "pull", "events", "--force", "--start", "1800"]) == 0
    with engine.open(cli, auto_sync=False, auto_migrate=False) as e:
        assert [v["i"] for _, v in e.read("events", 0, 5000)] == list(range(2500))
