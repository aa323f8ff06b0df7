"""Replication to `engine serve` on loopback: the engine's syncer against the old layer's client, same run.

The old layer (RedDBStorage over urllib.request) sent every record as two requests, a per-record
key-value copy and the stream append, each on a new TCP connection, one at a time, and every
current-state put (context, health, signature...) as it happened. The engine sends one append per
record in order per stream, several streams and keys in flight over keep-alive connections, and
collapses repeated puts of a key that are pending together. Both talk to the same server process
(durable, as `engine serve` runs by default) in the same run; the old client's request bodies are
encoded before the clock starts.

The same session also goes to a null server (benchmarks/nullserver.py: answers at once, stores
nothing), where each row measures its client alone: the ceiling of old-urllib / engine for any server.

Also measured: the server's own append and read rates under a concurrent load generator (threads
with the engine's keep-alive RedDBClient), with no peer (neither the Rust nor the FastAPI server is
installed).

Sizes: ENGINE_BENCH_SYNC_N records per round (default 400, both sides: the report compares round
medians), ENGINE_BENCH_SYNC_SERVER_N requests per server round (default 4000),
ENGINE_BENCH_SYNC_DURABLE=0 to run the server without fsync.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import engine
from engine.local import LocalStore
from engine.models import (
    ActionType,
    AgentState,
    ContextState,
    PatchRecord,
    SignatureMetrics,
    TrainingMetrics,
    VerifierMetrics,
    create_action_record,
    create_log_entry,
    create_retrieval_event,
    signature_summary,
    verifier_summary,
)
from engine.remote import RedDBClient
from engine.server import storage_name
from engine.sync import Syncer
from engine.transport import KeepAliveTransport
from tests.integration.conftest import RedDBServerProcess

N = int(os.environ.get("ENGINE_BENCH_SYNC_N", "400"))
SERVER_N = int(os.environ.get("ENGINE_BENCH_SYNC_SERVER_N", "4000"))
DURABLE = os.environ.get("ENGINE_BENCH_SYNC_DURABLE", "1") != "0"
THREADS = 8
_ns = itertools.count()


READ_ROWS = 10_000


@pytest.fixture(scope="module")
def server() -> Iterator[RedDBServerProcess]:
    base = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    srv = RedDBServerProcess(base / "data", durable=DURABLE, log_dir=base)
    store = LocalStore(srv.data_dir)  # the stream the read benchmark pages through, written directly
    with store.write() as batch:
        for i in range(READ_ROWS):
            store.append(batch, storage_name("bench", "readme"), orjson.dumps({"i": i, "pad": "x" * 300}))
    store.close()
    srv.start()
    yield srv
    srv.stop()


class NullServerProcess(RedDBServerProcess):
    """benchmarks/nullserver.py (answers at once, stores nothing) under the same start, health wait
    and stop as `engine serve`; its data directory only holds the logs."""

    def _command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).with_name("nullserver.py")), str(self.port)]


@pytest.fixture(scope="module")
def null_server() -> Iterator[NullServerProcess]:
    with NullServerProcess(Path(tempfile.mkdtemp(prefix="bench-null-")) / "logs") as srv:
        yield srv


# ---------------------------------------------------------------------- the workload
def session(n: int) -> list[tuple[str, Any]]:
    """An agent loop: an action and a log per step, retrievals, and every few steps a patch, the
    current context and health, signature and verifier metrics, a training epoch."""
    out: list[tuple[str, Any]] = []
    for i in itertools.count():
        out.append(
            ("action", create_action_record(ActionType.CODE_EDIT, {"i": i}, {}, {}, {}, 0.5, 0.9, 0.1))
        )
        out.append(("log", create_log_entry("INFO", "agent.loop", f"step {i}", {"step": i})))
        if i % 2 == 0:
            out.append(("retrieval", create_retrieval_event("/w", f"q{i}", [{"path": "a.py", "score": 0.5}])))
        if i % 5 == 0:
            t = time.time()
            out.append(
                ("patch", PatchRecord(f"p{i}", t, "h", ["a.py"], "diff", True, None, 0.8, 0.1, None, "local"))
            )
            out.append(
                (
                    "context",
                    ContextState(f"c{i}", t, AgentState.EXECUTING, "task", "/w", [], [], {}, {}, "local"),
                )
            )
            out.append(("health", {"cpu": 0.5, "step": i}))
            out.append(
                ("signature", SignatureMetrics(f"sig{i % 3}", 80.0, 0.9, 1.2, "1MB", i, "now", "predict"))
            )
            out.append(("verifier", VerifierMetrics(f"ver{i % 2}", 90.0, "ok", i, 1, "now", 0.3)))
        if i % 10 == 0:
            out.append(
                (
                    "training",
                    TrainingMetrics("s", time.time(), i, 0.8, 0.7, 0.3, 1e-3, 32, "m", "local", {}, {}),
                )
            )
        if len(out) >= n:
            return out[:n]
    raise AssertionError("unreachable")


def outbox_written(eng: Any) -> int:
    """Outbox entries written so far (one per replicated write): the outbox sequence."""
    raw = eng.store.meta_get("outbox_seq")
    return int.from_bytes(raw, "big") if raw else 0


def write_engine(eng: Any, records: list[tuple[str, Any]]) -> None:
    api = {
        "action": eng.record_action,
        "log": eng.log,
        "retrieval": eng.record_retrieval_event,
        "patch": eng.store_patch_record,
        "context": eng.store_context_state,
        "health": eng.store_system_health,
        "signature": eng.store_signature_metrics,
        "verifier": eng.store_verifier_metrics,
        "training": eng.store_training_metrics,
    }
    with eng.batch():
        for kind, rec in records:
            api[kind](rec)


OLD_LAYOUT = {  # kind -> (the per-record key-value copy the old layer wrote, the stream)
    "action": (lambda r: f"actions:{r.action_id}", "rl_actions"),
    "log": (lambda r: f"logs:{r.log_id}", "system_logs"),
    "retrieval": (lambda r: f"retrieval:{r.event_id}", "retrieval_events"),
    "patch": (lambda r: f"patches:{r.patch_id}", "patch_history"),
    "context": (lambda r: "context:current", "context_history"),
    "training": (lambda r: f"training:{r.session_id}", "training_history"),
    "signature": (lambda r: f"signatures:{r.signature_name}", "signature_metrics"),
    "verifier": (lambda r: f"verifiers:{r.verifier_name}", "verifier_metrics"),
}


def old_requests(records: list[tuple[str, Any]], ns: str) -> list[tuple[str, str, bytes]]:
    """What the old RedDBDataManager sent for these records: (method, path, body), in order."""
    kv, st = f"/api/kv/{ns}/dspy_agent:", f"/api/streams/{ns}/"
    out: list[tuple[str, str, Any]] = []
    for kind, rec in records:
        if kind == "health":
            row = {**rec, "timestamp": time.time()}
            out += [("PUT", kv + "health:current", row), ("POST", st + "health_history/append", row)]
            continue
        key, stream = OLD_LAYOUT[kind]
        full = rec.to_dict()
        summary = {"signature": signature_summary, "verifier": verifier_summary}.get(kind)
        row = full if summary is None else summary(rec)
        out += [("PUT", kv + key(rec), full), ("POST", f"{st}{stream}/append", row)]
    return [(m, p, orjson.dumps(b)) for m, p, b in out]


def send_old(url: str, requests: list[tuple[str, str, bytes]]) -> None:
    """The old RedDBStorage transport: urllib, a new connection per request, one at a time."""
    for method, path, body in requests:
        req = urllib.request.Request(
            url + path, data=body, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()


def _info(benchmark: Any, impl: str, ops: int, **kw: Any) -> None:
    benchmark.extra_info.update(impl=impl, ops_per_round=ops, server_durable=DURABLE, **kw)


def longest_stream(records: list[tuple[str, Any]], ns: str) -> list[tuple[str, bytes]]:
    """The requests of the stream with the most appends in `records`: (target path, body)."""
    by_stream: dict[str, list[bytes]] = {}
    for method, path, body in old_requests(records, ns):
        if method == "POST":
            by_stream.setdefault(path, []).append(body)
    path, bodies = max(by_stream.items(), key=lambda kv: len(kv[1]))
    return [(path, body) for body in bodies]


def send_in_order(url: str, appends: list[tuple[str, bytes]]) -> None:
    """The floor for any in-order client: one append at a time on one keep-alive socket, no other work."""
    host, port = url.removeprefix("http://").split(":")
    transport = KeepAliveTransport()
    try:
        for path, body in appends:
            data = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" % path.encode()
            data += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            reply = transport.exchange((host, int(port)), b"POST", data, connect_timeout=5, read_timeout=30)
            assert reply.status == 200, reply.content
    finally:
        transport.close()


# ---------------------------------------------------------------------- engine vs old client
FLOOR = "in-order floor: longest stream alone, raw socket"


NULL = "a null server (client cost only)"


@pytest.mark.parametrize(
    ("workload", "to"),
    [("agent session", "engine serve"), ("rl_actions only", "engine serve"), ("agent session", NULL)],
)
@pytest.mark.parametrize("impl", ["engine", "old-urllib", FLOOR])
def test_replicate(
    benchmark: Any, request: pytest.FixtureRequest, tmp_path: Path, impl: str, workload: str, to: str
) -> None:
    """Against `engine serve` (durable), and against a null server that answers at once and stores
    nothing: there, every row measures its client alone, so old-urllib / engine is the most any
    server could let the engine's client gain."""
    benchmark.group = f"replicate {N} records to {to}: {workload}"
    url = request.getfixturevalue("server" if to == "engine serve" else "null_server").url
    if workload == "agent session":
        records = session(N)
    else:
        records = [("action", r) for _, r in session(3 * N) if _ == "action"][:N]
    if impl == "engine":
        wanted = workload == "agent session" and to == "engine serve"
        target = "records/s replicated >= 10x the old layer's client" if wanted else None
        _info(benchmark, impl, N, target=target, target_vs={"old-urllib": 10} if target else None)
        if workload == "rl_actions only":
            benchmark.extra_info["note"] = "one stream: appends go strictly in order, one at a time"
        elif to == NULL:
            benchmark.extra_info["note"] = (
                "the server answers at once and stores nothing, so each row is its client's own cost: "
                "old-urllib / engine here is the most any server could let this client reach"
            )
        opened: list[tuple[Any, Syncer]] = []

        def setup() -> tuple[tuple[()], dict[str, Any]]:
            ns = f"e{next(_ns)}"
            eng = engine.open(tmp_path / ns, reddb_url=url, namespace=ns, auto_sync=False, durable=False)
            write_engine(eng, records)  # local writes happen before the clock starts
            opened.append((eng, Syncer(eng)))
            return (), {}

        def drain() -> None:
            assert opened[-1][1].flush(timeout=600)

        benchmark.pedantic(drain, setup=setup, rounds=3, iterations=1)
        for eng, syncer in opened:
            st = syncer.status()
            assert (st["backlog"], st["sent"], st["duplicates_avoided"]) == (0, outbox_written(eng), 0)
            syncer.stop()
            eng.close()
        return
    prepared: dict[str, Any] = {}
    if impl == FLOOR:
        _info(benchmark, impl, N)
        appends = longest_stream(records, "floor")
        benchmark.extra_info["note"] = (
            f"{len(appends)} of the {N} records go to one stream ({appends[0][0].split('/')[-2]}); in order "
            "they are sent one at a time, each waiting for its answer: no client can replicate the "
            "session faster than this row, so old-urllib / this row bounds every in-order client's speed-up"
        )

        def setup_floor() -> tuple[tuple[()], dict[str, Any]]:
            prepared["appends"] = longest_stream(records, f"f{next(_ns)}")
            return (), {}

        benchmark.pedantic(
            lambda: send_in_order(url, prepared["appends"]), setup=setup_floor, rounds=3, iterations=1
        )
        return
    _info(benchmark, impl, N)

    def setup_old() -> tuple[tuple[()], dict[str, Any]]:
        prepared["reqs"] = old_requests(records, f"o{next(_ns)}")
        return (), {}

    benchmark.pedantic(lambda: send_old(url, prepared["reqs"]), setup=setup_old, rounds=3, iterations=1)


# ---------------------------------------------------------------------- the server alone
def _load(url: str, per_thread: int, work: Any) -> None:
    """Run `work(client, thread number, n)` on THREADS threads, each with its own keep-alive client.

    The clients are the engine's RedDBClient on its direct transport (~0.05 ms of client CPU per
    small request), so that the load generator, sharing one GIL, is not what is measured.
    """
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            with RedDBClient(
                url, namespace="bench", transport=KeepAliveTransport(), read_timeout=30
            ) as client:
                work(client, t, per_thread)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


def test_server_append_rate(benchmark: Any, server: RedDBServerProcess) -> None:
    benchmark.group = f"engine serve: appends, {THREADS} keep-alive clients"
    _info(benchmark, "engine", SERVER_N, unit="appends")
    body = orjson.dumps(create_action_record(ActionType.CODE_EDIT, {}, {}, {}, {}, 0.5, 0.9, 0.1).to_dict())

    def work(client: RedDBClient, t: int, n: int) -> None:
        stream = f"load{t % 4}"  # two writers per stream: the server orders them
        for _ in range(n):
            client.append_raw(stream, body)

    benchmark.pedantic(lambda: _load(server.url, SERVER_N // THREADS, work), rounds=3, iterations=1)


def test_server_read_rate(benchmark: Any, server: RedDBServerProcess) -> None:
    benchmark.group = f"engine serve: reads of 1000 rows, {THREADS} keep-alive clients"
    pages = max(THREADS, SERVER_N // 20)
    _info(benchmark, "engine", pages * 1000, unit="rows read", requests=pages)

    def work(client: RedDBClient, t: int, n: int) -> None:
        for i in range(n):
            start = (i * 1000 + t * 137) % (READ_ROWS - 1000)
            assert len(client.read("readme", start, 1000)) == 1000

    benchmark.pedantic(lambda: _load(server.url, pages // THREADS, work), rounds=3, iterations=1)
