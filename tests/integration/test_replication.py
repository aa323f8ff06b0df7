"""Replication against a real RedDB-compatible server (`python -m engine.server`) on loopback.

Covers: the wire layout of every record kind, an outage in the middle of 20k writes, ambiguous
failures injected by a TCP proxy (answers dropped after the server committed, connections dropped
before forwarding, answers held past the client's read timeout) with another agent writing to the
same streams, kill -9 of the syncing process mid-drain, misbehaving servers, the token never
leaking, and the `sync` / `pull` commands. Run as a module, this file is the child process of the
kill -9 test (`python -m tests.integration.test_replication drain PATH URL SEED`).
"""

from __future__ import annotations

import collections
import contextlib
import http.server
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

import engine
import engine.cli
from engine import keys
from engine.errors import AuthError, RemoteError, RemoteTimeoutError
from engine.local import LocalStore
from engine.models import (
    ActionType,
    AgentState,
    ContextState,
    Environment,
    PatchRecord,
    SignatureMetrics,
    TrainingMetrics,
    VerifierMetrics,
    create_action_record,
    create_embedding_vector,
    create_log_entry,
    create_retrieval_event,
)
from engine.server import storage_name
from engine.sync import Syncer
from tests.httpwire import read_message

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "integ-T0k3n-77aa55cc"
KILL_CYCLES = int(os.environ.get("ENGINE_SYNC_KILL_CYCLES", "10"))
OUTAGE_WRITES = int(os.environ.get("ENGINE_SYNC_OUTAGE_WRITES", "20000"))


def action(i: int, tag: str = "") -> Any:
    return create_action_record(ActionType.CODE_EDIT, {"i": i, "tag": tag}, {}, {}, {}, 0.5, 0.9, 0.1)


def tuned(eng: Any, **kw: Any) -> Syncer:
    """A syncer with short delays, so outages and faults cost test time in the seconds."""
    for k, v in {
        "backoff_base": 0.01,
        "backoff_cap": 0.3,
        "breaker_cooldown": 0.2,
        "idle_poll": 0.01,
        "read_timeout": 2.0,
        "connect_timeout": 0.5,
    }.items():
        kw.setdefault(k, v)
    return Syncer(eng, **kw)


def remote_rows(url: str, stream: str, ns: str = "dspy", token: str | None = None) -> list[Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    out: list[Any] = []
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        start = 0
        while True:
            page = http.get(f"/api/streams/{ns}/{stream}/read", params={"start": start, "count": 1000}).json()
            if not page:
                return out
            assert [p["offset"] for p in page] == list(range(start, start + len(page)))
            out.extend(p["value"] for p in page)
            start = page[-1]["offset"] + 1


def local_rows(eng: Any, stream: str) -> list[Any]:
    return [v for _, v in eng.read(stream, 0, 10**9)]


# ---------------------------------------------------------------------- wire layout
def test_every_record_kind_arrives_in_the_wire_layout(reddb_server, tmp_path):
    eng = engine.open(tmp_path / "s", reddb_url=reddb_server.url, auto_migrate=False)  # auto_sync on
    sig = SignatureMetrics("CodeAnalyzer", 85.5, 0.9, 1.2, "120MB", 10, "2025-01-01", "analysis", True, [])
    ver = VerifierMetrics("lint", 94.2, "ok", 100, 3, "2025-01-01", 0.5, 0.01, None)
    tm = TrainingMetrics("sess", 1.5, 1, 0.8, 0.75, 0.3, 1e-3, 32, "gepa", Environment.TESTING, {"lr": 1}, {})
    act = create_action_record(
        ActionType.TEST_EXECUTION, {}, {}, {"signature_name": "CodeAnalyzer"}, {}, 1, 1, 1
    )
    log = create_log_entry("ERROR", "agent", "boom", {"step": 3}, Environment.STAGING, "sess", "t1")
    ev = create_retrieval_event("/w", "where is main", [{"path": "a.py", "score": 0.9}])
    ctx = ContextState(
        "c1", 2.0, AgentState.PLANNING, "task", "/w", ["a.py"], ["x"], {"rss": 1}, {}, Environment.LOCAL
    )
    patch = PatchRecord(
        "p1", 3.0, "h", ["a.py"], "--- a\n+++ b", True, None, 0.8, 0.1, None, Environment.LOCAL
    )
    emb = create_embedding_vector("e1", [0.5, -0.25, 1.0, 0.125], "code", {"lang": "py"}, "a.py", 1, 9)
    eng.store_signature_metrics(sig)
    eng.store_verifier_metrics(ver)
    eng.store_training_metrics(tm)
    eng.record_action(act)
    eng.log(log)
    eng.record_retrieval_event(ev)
    eng.store_context_state(ctx)
    eng.store_patch_record(patch)
    eng.store_system_health({"cpu": 0.5, "ok": True})
    eng.store_embedding(emb)
    eng.put("custom:key", {"x": [1, 2]})
    eng.append("custom_stream", {"y": 1})
    assert eng.flush(timeout=30)
    st = eng.sync_status()
    assert (st["backlog"], st["last_error"], st["state"]) == (0, None, "ok") and st["sent"] == 18

    with reddb_server.client() as http:

        def kv(key: str) -> Any:
            resp = http.get(f"/api/kv/dspy/{quote(key, safe='')}")
            return resp.json() if resp.status_code == 200 else resp.status_code

        assert kv("dspy_agent:signatures:CodeAnalyzer") == sig.to_dict()
        assert kv("dspy_agent:verifiers:lint") == ver.to_dict()
        assert kv("dspy_agent:registries:signatures") == ["CodeAnalyzer"]
        assert kv("dspy_agent:registries:verifiers") == ["lint"]
        assert kv("dspy_agent:context:current") == ctx.to_dict()
        assert kv("dspy_agent:health:current") == eng.get_system_health()
        wire_emb = kv("dspy_agent:embeddings:e1")
        assert wire_emb == emb.to_dict() and wire_emb["vector"] == [0.5, -0.25, 1.0, 0.125]
        assert all(isinstance(x, float) for x in wire_emb["vector"])
        assert kv("custom:key") == {"x": [1, 2]}
        assert kv(f"dspy_agent:actions:{act.action_id}") == 404  # no per-record copies
    for stream in (*keys.STREAMS, "custom_stream"):
        assert remote_rows(reddb_server.url, stream) == local_rows(eng, stream), stream
    assert remote_rows(reddb_server.url, "__embeddings") == []  # local-only stream
    assert remote_rows(reddb_server.url, "training_history") == [tm.to_dict()]
    assert remote_rows(reddb_server.url, "retrieval_events") == [ev.to_dict()]
    assert remote_rows(reddb_server.url, "context_history") == [ctx.to_dict()]
    assert remote_rows(reddb_server.url, "patch_history") == [patch.to_dict()]
    [row] = remote_rows(reddb_server.url, "rl_actions")
    assert row["action_id"] == act.action_id and row["result"]["signature_name"] == "CodeAnalyzer"
    [summary] = remote_rows(reddb_server.url, "signature_metrics")
    assert list(summary) == [
        "signature_name",
        "performance_score",
        "success_rate",
        "avg_response_time",
        "timestamp",
    ]
    [vsum] = remote_rows(reddb_server.url, "verifier_metrics")
    assert list(vsum) == ["verifier_name", "accuracy", "checks_performed", "issues_found", "timestamp"]
    eng.close()


# ---------------------------------------------------------------------- outage
def test_outage_in_the_middle_of_20k_writes_loses_and_duplicates_nothing(reddb_server_factory, tmp_path):
    server = reddb_server_factory(durable=False)
    eng = engine.open(
        tmp_path / "s", reddb_url=server.url, auto_sync=False, auto_migrate=False, durable=False
    )
    s = tuned(eng, workers=6)
    s.start()
    batches = OUTAGE_WRITES // 100
    down_at = None
    for b in range(batches):
        with eng.batch():
            eng.record_actions_batch([action(b * 100 + i) for i in range(40)])
            eng.log_batch([create_log_entry("INFO", "w", f"{b}.{i}", {}) for i in range(20)])
            for i in range(13):
                eng.record_retrieval_event(create_retrieval_event("/w", f"{b}.{i}", []))
                eng.append("events_a", {"b": b, "i": i})
                eng.append("events_b", {"b": b, "i": i})
            eng.put("progress", {"batch": b})
        if b == batches * 3 // 10:
            server.stop()
            down_at = time.monotonic()
        if down_at is not None and b == batches * 6 // 10:
            time.sleep(max(0.0, 2.5 - (time.monotonic() - down_at)))  # down for a few seconds
            server.start()
    assert eng.store.outbox_size() > 0
    assert s.flush(timeout=150), s.status()
    st = s.status()
    assert (
        st["failures"] >= 1 and st["backlog"] == 0 and st["sent"] + st["duplicates_avoided"] == batches * 100
    )
    for stream in ("rl_actions", "system_logs", "retrieval_events", "events_a", "events_b"):
        assert remote_rows(server.url, stream) == local_rows(eng, stream), stream
    assert len(remote_rows(server.url, "rl_actions")) == batches * 40
    with server.client() as http:
        assert http.get("/api/kv/dspy/progress").json() == {"batch": batches - 1}
    s.stop()
    eng.close()


# ---------------------------------------------------------------------- ambiguous failures
class FaultProxy:
    """A loopback HTTP/1.1 proxy that forwards whole requests and sabotages a fraction of them.

    after: forward, let the server answer (so an append committed), then drop the connection;
    before: drop the connection without forwarding; delay: hold the answer `hold` seconds (past the
    client's read timeout), then drop. Keep-alive is kept for the requests it lets through.
    """

    def __init__(self, upstream_port: int, *, after: float, before: float, delay: float, hold: float) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.p = (("after", after), ("before", before), ("delay", delay))
        self.hold = hold
        self.rng = random.Random(2024)
        self.mu = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.closing = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.closing.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _fault(self) -> str | None:
        with self.mu:
            self.counts["requests"] += 1
            x = self.rng.random()
            for name, p in self.p:
                if x < p:
                    self.counts[name] += 1
                    return name
                x -= p
        return None

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, socket.create_connection(self.upstream) as up:
                cbuf = ubuf = b""
                while True:
                    req, cbuf = read_message(conn, cbuf)
                    if req is None:
                        return
                    fault = self._fault()
                    if fault == "before":
                        return
                    up.sendall(req)
                    resp, ubuf = read_message(up, ubuf)
                    if resp is None or fault == "after":
                        return
                    if fault == "delay":
                        self.closing.wait(self.hold)
                        return
                    conn.sendall(resp)
        except OSError:
            return


BATCHES = 15


def test_ambiguous_failures_through_a_sabotaging_proxy(reddb_server_factory, tmp_path):
    server = reddb_server_factory(durable=False)
    proxy = FaultProxy(server.port, after=0.05, before=0.04, delay=0.03, hold=0.7)
    eng = engine.open(tmp_path / "s", reddb_url=proxy.url, auto_sync=False, auto_migrate=False, durable=False)
    streams = ("rl_actions", "system_logs", "events", "ticks")
    stop = threading.Event()
    foreign = collections.Counter()

    def other_agent() -> None:  # writes to the same streams directly, interleaving its rows
        with httpx.Client(base_url=server.url, timeout=5) as http:
            while not stop.is_set():
                name = streams[foreign.total() % len(streams)]
                http.post(f"/api/streams/dspy/{name}/append", json={"foreign": foreign[name]})
                foreign[name] += 1
                time.sleep(0.01)

    agent = threading.Thread(target=other_agent, daemon=True)
    agent.start()
    s = tuned(eng, read_timeout=0.5, breaker_threshold=20)
    s.start()
    for b in range(BATCHES):
        with eng.batch():
            eng.record_actions_batch([action(b * 20 + i) for i in range(20)])
            eng.log_batch([create_log_entry("INFO", "w", f"{b}.{i}", {}) for i in range(16)])
            for i in range(16):
                eng.append("events", {"b": b, "i": i})
                eng.append("ticks", {"tick": 1})  # identical values: matched in order by value
            eng.put(f"k{b % 5}", {"b": b})
        time.sleep(0.05)
    try:
        assert s.flush(timeout=120), s.status()
    finally:
        stop.set()
        agent.join()
        s.stop()
        proxy.close()
    st = s.status()
    faults = proxy.counts["after"] + proxy.counts["before"] + proxy.counts["delay"]
    assert faults >= 0.10 * proxy.counts["requests"] and proxy.counts["after"] >= 5, proxy.counts
    assert st["duplicates_avoided"] >= 1 and st["sent"] + st["duplicates_avoided"] == BATCHES * 69
    for name in streams:
        rows = remote_rows(server.url, name)
        assert [r for r in rows if "foreign" not in r] == local_rows(eng, name), name
        assert [r["foreign"] for r in rows if "foreign" in r] == list(range(foreign[name]))
    with server.client() as http:
        want = [{"b": BATCHES - 5 + i} for i in range(5)]
        assert [http.get(f"/api/kv/dspy/k{(BATCHES - 5 + i) % 5}").json() for i in range(5)] == want
    eng.close()


# ---------------------------------------------------------------------- kill -9 mid-drain
def _child_drain(path: str, url: str, seed: int) -> None:
    eng = engine.open(path, reddb_url=url, auto_sync=False, auto_migrate=False, durable=False)
    s = tuned(eng)

    def write() -> None:
        for i in range(10**6):
            eng.record_actions_batch([action(i, f"child{seed}") for _ in range(5)])
            eng.append("events", {"seed": seed, "i": i})
            time.sleep(0.02)

    threading.Thread(target=write, daemon=True).start()
    s.start()
    print("draining", flush=True)
    time.sleep(120)


def test_kill_9_of_the_syncing_process_mid_drain(reddb_server_factory, tmp_path):
    server = reddb_server_factory(durable=False)
    path = tmp_path / "s"
    with engine.open(path, reddb_url=server.url, auto_sync=False, auto_migrate=False, durable=False) as eng:
        with eng.batch():
            # enough that ten kills after 0.05-0.4 s each always find work in flight
            eng.record_actions_batch([action(i, "parent") for i in range(9000)])
            eng.log_batch([create_log_entry("INFO", "p", str(i), {}) for i in range(3000)])
            for i in range(3000):
                eng.append("events", {"seed": -1, "i": i})
    rng = random.Random(99)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pending_after_kill = []
    for cycle in range(KILL_CYCLES):
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.test_replication",
                "drain",
                str(path),
                server.url,
                str(cycle),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdout.readline() == "draining\n", child.stderr
        time.sleep(rng.uniform(0.05, 0.4))
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        store = LocalStore(path)
        pending_after_kill.append(store.outbox_size())
        store.close()
    assert sum(1 for n in pending_after_kill if n > 0) >= KILL_CYCLES - 1  # killed with work in flight
    assert len(remote_rows(server.url, "rl_actions")) > 0
    with engine.open(path, reddb_url=server.url, auto_sync=False, auto_migrate=False) as eng:
        s = tuned(eng)
        assert s.flush(timeout=120), s.status()
        for stream in ("rl_actions", "system_logs", "events"):
            assert remote_rows(server.url, stream) == local_rows(eng, stream), stream
        ids = [r["action_id"] for r in remote_rows(server.url, "rl_actions")]
        assert len(ids) == len(set(ids)) >= 900
        assert s.status()["duplicates_avoided"] >= 1  # some kill fell between an answer and its delete
        s.stop()


# ---------------------------------------------------------------------- misbehaving servers
class BadServer:
    """A loopback HTTP server that answers every request the same bad way."""

    def __init__(self, mode: str) -> None:
        self.hits = 0
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                outer.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if mode == "hang":
                    outer.release.wait(30)
                    return
                status, body = {
                    "500": (500, b'{"ok":false,"error":"database is locked"}'),
                    "401": (401, b'{"ok":false,"error":"unauthorized"}'),
                    "malformed": (200, b"{this is not json"),
                }[mode]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    ("mode", "error", "status"),
    [
        ("500", RemoteError, 500),
        ("401", AuthError, 401),
        ("malformed", RemoteError, 200),
        ("hang", RemoteTimeoutError, None),
    ],
)
def test_misbehaving_server_gives_typed_errors_in_bounded_time_and_keeps_the_outbox(
    tmp_path, mode, error, status
):
    bad = BadServer(mode)
    eng = engine.open(tmp_path / "s", reddb_url=bad.url, auto_sync=False, auto_migrate=False, durable=False)
    try:
        for i in range(5):
            eng.append("events", {"i": i})
        s = tuned(eng, read_timeout=0.5, lane_retries=1)
        t0 = time.monotonic()
        with pytest.raises(error) as info:
            s.drain_once()
        assert info.value.status == status and time.monotonic() - t0 < 5.0
        assert eng.store.outbox_size() == 5 and local_rows(eng, "events") == [{"i": i} for i in range(5)]
        st = s.status()
        assert st["failures"] == (1 if mode == "401" else 2) and error.__name__ in st["last_error"]
        if mode == "401":
            s.start()
            with pytest.raises(AuthError):
                s.flush(timeout=5)
            time.sleep(0.2)
            assert bad.hits <= 2 and s.status()["state"] == "auth_failed"
        s.stop()
    finally:
        bad.close()
        eng.close()


# ---------------------------------------------------------------------- the token stays secret
def test_the_token_never_appears_in_logs_errors_reprs_or_urls(
    reddb_server_factory, tmp_path, caplog, capsys, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    server = reddb_server_factory(token=TOKEN, durable=False)
    wrong = "wr0ng-" + TOKEN[::-1]
    seen: list[str] = []
    eng = engine.open(tmp_path / "ok", reddb_url=server.url, reddb_token=TOKEN, auto_migrate=False)
    eng.record_actions_batch([action(i) for i in range(20)])
    assert eng.flush(timeout=30)
    seen += [repr(eng), repr(eng.config), repr(eng._syncer), repr(eng._syncer.client), str(eng.sync_status())]
    assert len(remote_rows(server.url, "rl_actions", token=TOKEN)) == 20
    eng.close()
    bad = engine.open(tmp_path / "bad", reddb_url=server.url, reddb_token=wrong, auto_migrate=False)
    bad.append("events", {"i": 1})
    with pytest.raises(AuthError) as info:
        bad.flush(timeout=10)
    seen += [str(info.value), repr(info.value), str(bad.sync_status()), repr(bad._syncer)]
    bad.close()
    monkeypatch.setenv("REDDB_URL", server.url)
    monkeypatch.setenv("REDDB_TOKEN", wrong)
    assert engine.cli.main(["--path", str(tmp_path / "bad"), "sync", "--timeout", "5"]) == 1
    out = capsys.readouterr()
    assert "token was rejected" in out.err
    text = "\n".join([*seen, caplog.text, out.out, out.err, server.output()])
    assert "HTTP Request" in caplog.text  # httpx logged its request lines, URLs included
    assert TOKEN not in text and wrong not in text


# ---------------------------------------------------------------------- command line
def test_cli_sync_then_pull_into_a_fresh_store(reddb_server_factory, tmp_path, monkeypatch, capsys):
    server = reddb_server_factory(durable=False, start=False)
    seeded = [create_log_entry("INFO", "seed", str(i), {"i": i}) for i in range(2100)]
    with contextlib.closing(LocalStore(server.data_dir)) as raw:
        with raw.write() as batch:  # a remote stream longer than one page, written by "another agent"
            for e in seeded:
                raw.append(batch, storage_name("dspy", "system_logs"), orjson.dumps(e.to_dict()))
    server.start()
    monkeypatch.setenv("REDDB_URL", server.url)
    src, dst = tmp_path / "src", tmp_path / "dst"
    with engine.open(src, auto_sync=False, auto_migrate=False) as eng:
        eng.record_actions_batch([action(i) for i in range(300)])
    assert engine.cli.main(["--path", str(src), "sync"]) == 0
    assert "300 sent, 0 duplicates avoided, backlog 0" in capsys.readouterr().out
    assert engine.cli.main(["--path", str(dst), "pull", "rl_actions"]) == 0
    assert engine.cli.main(["--path", str(dst), "pull", "system_logs"]) == 0
    assert "pulled 2,100 rows" in capsys.readouterr().out
    with (
        engine.open(src, auto_sync=False, auto_migrate=False) as a,
        engine.open(dst, auto_sync=False, auto_migrate=False) as b,
    ):
        assert (
            local_rows(b, "rl_actions")
            == local_rows(a, "rl_actions")
            == remote_rows(server.url, "rl_actions")
        )
        assert local_rows(b, "system_logs") == [e.to_dict() for e in seeded]
        assert b.store.outbox_size() == 0
        first = local_rows(a, "rl_actions")[0]["action_id"]
        assert b.get_action(first) == a.get_action(first)
        assert b.get_log(seeded[1234].log_id) == seeded[1234]


if __name__ == "__main__":
    if sys.argv[1] == "drain":
        _child_drain(sys.argv[2], sys.argv[3], int(sys.argv[4]))
