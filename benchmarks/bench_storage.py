"""Writes and newest-first reads: the engine against SQLite WAL and the old in-memory layer, same run.

Durability is matched: the engine's durable mode fsyncs every commit, so
SQLite runs with `synchronous=FULL`; the engine's `durable=False` is compared
with `synchronous=NORMAL` (WAL: survives a process crash, not power loss).
The old layer is a dict-and-list store with its semantics (two `asdict`
copies per record) and is not durable at all.

Sizes: ENGINE_BENCH_RECENT_ROWS (default 1,000,000) rows before the
`get_recent_actions(100)` read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
import uuid

import orjson
import pytest

import engine
from engine.models import ActionRecord, ActionType, EmbeddingVector, Environment, LogEntry

RECENT_ROWS = int(os.environ.get("ENGINE_BENCH_RECENT_ROWS", "1000000"))
BATCH = 1000


def make_action(i: int) -> ActionRecord:
    return ActionRecord(
        action_id=str(uuid.uuid4()),
        timestamp=time.time(),
        action_type=list(ActionType)[i % 9],
        state_before={"files": ["app.py"], "step": i},
        state_after={"files": ["app.py"], "analyzed": True},
        parameters={"depth": "full", "signature_name": "CodeAnalyzer"},
        result={"issues": 3, "suggestions": 5},
        reward=(i % 100) / 100,
        confidence=0.92,
        execution_time=3.4,
        environment=Environment.DEVELOPMENT,
        context_hash=None,
    )


def make_log(i: int) -> LogEntry:
    return LogEntry(
        log_id=str(uuid.uuid4()),
        timestamp=time.time(),
        level="INFO",
        source="agent.loop",
        message=f"step {i} done",
        context={"step": i},
        environment=Environment.DEVELOPMENT,
    )


def make_embedding(i: int) -> EmbeddingVector:
    import numpy as np

    return EmbeddingVector(
        id=f"e{i}",
        vector=np.random.default_rng(i).standard_normal(384).astype(np.float32).tolist(),
        metadata={"lang": "py"},
        timestamp=time.time(),
        source_type="code",
    )


class OldMemoryLayer:
    """The old RedDBDataManager in memory mode: a KV dict and stream lists, two asdict copies per record."""

    def __init__(self) -> None:
        self.kv: dict[str, object] = {}
        self.streams: dict[str, list[dict]] = {}

    def _dict(self, rec) -> dict:
        d = dataclasses.asdict(rec)
        for k, v in d.items():
            if isinstance(v, (ActionType, Environment)):
                d[k] = v.value
        return d

    def record_action(self, a: ActionRecord) -> None:
        self.kv[f"dspy:dspy_agent:actions:{a.action_id}"] = self._dict(a)
        self.streams.setdefault("rl_actions", []).append(self._dict(a))

    def log(self, e: LogEntry) -> None:
        self.kv[f"dspy:dspy_agent:logs:{e.log_id}"] = self._dict(e)
        self.streams.setdefault("system_logs", []).append(self._dict(e))

    def store_embedding(self, e: EmbeddingVector) -> None:
        self.kv[f"dspy:dspy_agent:embeddings:{e.id}"] = dataclasses.asdict(e)

    def get_recent_actions(self, limit: int = 100) -> list[ActionRecord]:
        rows = self.streams.get("rl_actions", [])[-limit:]
        return [ActionRecord.from_dict(r) for r in reversed(rows)]


class SQLiteStore:
    """What a user would otherwise pick: SQLite in WAL mode, JSON rows, an autoincrement offset."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS streams (stream TEXT, offset INTEGER, rid TEXT, value BLOB,"
            " PRIMARY KEY (stream, offset))"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB)")
        self.next: dict[str, int] = {}

    def _append(self, stream: str, rid: str, value: bytes) -> None:
        off = self.next.get(stream, 0)
        self.db.execute("INSERT INTO streams VALUES (?, ?, ?, ?)", (stream, off, rid, value))
        self.next[stream] = off + 1

    def record_action(self, a: ActionRecord) -> None:
        self.db.execute("BEGIN")
        self._append("rl_actions", a.action_id, orjson.dumps(a.to_dict()))
        self.db.execute("COMMIT")

    def record_actions_batch(self, actions: list[ActionRecord]) -> None:
        self.db.execute("BEGIN")
        for a in actions:
            self._append("rl_actions", a.action_id, orjson.dumps(a.to_dict()))
        self.db.execute("COMMIT")

    def log(self, e: LogEntry) -> None:
        self.db.execute("BEGIN")
        self._append("system_logs", e.log_id, orjson.dumps(e.to_dict()))
        self.db.execute("COMMIT")

    def store_embedding(self, e: EmbeddingVector) -> None:
        self.db.execute("BEGIN")
        self.db.execute(
            "INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"embeddings:{e.id}", orjson.dumps(e.to_dict()))
        )
        self.db.execute("COMMIT")

    def get_recent_actions(self, limit: int = 100) -> list[ActionRecord]:
        cur = self.db.execute(
            "SELECT value FROM streams WHERE stream='rl_actions' ORDER BY offset DESC LIMIT ?", (limit,)
        )
        return [ActionRecord.from_dict(orjson.loads(v)) for (v,) in cur]


@pytest.fixture(params=["durable", "fast"])
def durability(request):
    return request.param


def _engine(tmp_path, durability):
    return engine.open(tmp_path / "eng", durable=durability == "durable", auto_migrate=False)


def _sqlite(tmp_path, durability):
    return SQLiteStore(str(tmp_path / "sq.db"), "FULL" if durability == "durable" else "NORMAL")


def _info(benchmark, impl: str, ops: int, target: str | None = None, **kw) -> None:
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["ops_per_round"] = ops
    if target:
        benchmark.extra_info["target"] = target
    benchmark.extra_info.update(kw)


# ---------------------------------------------------------------- single-record writes
@pytest.mark.parametrize("impl", ["engine", "sqlite-wal", "old-memory"])
def test_record_action_single(benchmark, tmp_path, durability, impl):
    benchmark.group = f"record_action one by one ({durability})"
    if impl == "engine":
        store = _engine(tmp_path, durability)
        target = "at least as fast as SQLite WAL, same durability" if durability == "durable" else None
        _info(benchmark, impl, 1, target, target_vs={"sqlite-wal": 1.0} if target else None)
    elif impl == "sqlite-wal":
        store = _sqlite(tmp_path, durability)
        _info(benchmark, impl, 1)
    else:
        store = OldMemoryLayer()
        _info(benchmark, impl, 1, note="not durable")
    actions = iter([make_action(i) for i in range(200_000)])
    benchmark.pedantic(lambda: store.record_action(next(actions)), rounds=300, iterations=1, warmup_rounds=5)


@pytest.mark.parametrize("impl", ["engine", "sqlite-wal", "old-memory"])
def test_log_single(benchmark, tmp_path, durability, impl):
    benchmark.group = f"log one by one ({durability})"
    store = {
        "engine": lambda: _engine(tmp_path, durability),
        "sqlite-wal": lambda: _sqlite(tmp_path, durability),
    }
    s = store.get(impl, OldMemoryLayer)()
    _info(benchmark, impl, 1)
    logs = iter([make_log(i) for i in range(100_000)])
    benchmark.pedantic(lambda: s.log(next(logs)), rounds=300, iterations=1, warmup_rounds=5)


@pytest.mark.parametrize("impl", ["engine", "sqlite-wal", "old-memory"])
def test_store_embedding(benchmark, tmp_path, durability, impl):
    benchmark.group = f"store_embedding 384-d ({durability})"
    store = {
        "engine": lambda: _engine(tmp_path, durability),
        "sqlite-wal": lambda: _sqlite(tmp_path, durability),
    }
    s = store.get(impl, OldMemoryLayer)()
    _info(benchmark, impl, 1)
    embs = iter([make_embedding(i) for i in range(2000)])
    benchmark.pedantic(lambda: s.store_embedding(next(embs)), rounds=200, iterations=1, warmup_rounds=5)


# ---------------------------------------------------------------- batched writes
@pytest.mark.parametrize("impl", ["engine", "sqlite-wal", "old-memory"])
def test_record_actions_batched(benchmark, tmp_path, impl):
    benchmark.group = f"record_action batched x{BATCH} (durable)"
    batches = iter([[make_action(i) for i in range(BATCH)] for _ in range(40)])
    if impl == "engine":
        s = _engine(tmp_path, "durable")
        _info(benchmark, impl, BATCH, ">= 200k records/s", target_max_s=BATCH / 200_000)
        fn = lambda: s.record_actions_batch(next(batches))  # noqa: E731
    elif impl == "sqlite-wal":
        sq = _sqlite(tmp_path, "durable")
        _info(benchmark, impl, BATCH)
        fn = lambda: sq.record_actions_batch(next(batches))  # noqa: E731
    else:
        old = OldMemoryLayer()
        _info(benchmark, impl, BATCH, note="not durable")

        def fn() -> None:
            for a in next(batches):
                old.record_action(a)

    benchmark.pedantic(fn, rounds=35, iterations=1, warmup_rounds=2)


# ---------------------------------------------------------------- newest-first read after many rows
@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """Stores holding RECENT_ROWS actions each (built once per session)."""
    base = tmp_path_factory.mktemp("recent")
    eng = engine.open(base / "eng", durable=False, auto_migrate=False)
    sq = SQLiteStore(str(base / "sq.db"), "NORMAL")
    old = OldMemoryLayer()
    template = make_action(0).to_dict()
    for lo in range(0, RECENT_ROWS, 10_000):
        chunk = []
        for i in range(lo, min(RECENT_ROWS, lo + 10_000)):
            d = dict(template, action_id=f"a{i}", reward=(i % 100) / 100, timestamp=1.7e9 + i)
            chunk.append(ActionRecord.from_dict(d))
        eng.record_actions_batch(chunk)
        sq.record_actions_batch(chunk)
        old.streams.setdefault("rl_actions", []).extend(json.loads(json.dumps([c.to_dict() for c in chunk])))
    yield {"engine": eng, "sqlite-wal": sq, "old-memory": old}
    eng.close()


@pytest.mark.parametrize("impl", ["engine", "sqlite-wal", "old-memory"])
def test_get_recent_actions_100(benchmark, filled, impl):
    benchmark.group = f"get_recent_actions(100) after {RECENT_ROWS:,} actions"
    s = filled[impl]
    target = "< 150 us" if impl == "engine" else None
    _info(benchmark, impl, 1, target, target_max_s=150e-6 if target else None)
    result = benchmark(s.get_recent_actions, 100)
    assert len(result) == 100
    assert result[0].timestamp >= result[-1].timestamp
