"""`Engine`: the public data API over the LMDB tier, with the old layer's method names.

Every write validates first, encodes once (orjson), then commits in one LMDB
transaction that holds the stream row, the id-index entry, the key-value
current state and (when replicating) the outbox entries: nothing is
acknowledged before its commit, and nothing is half-written. Readers return
newest first, always, and never mutate what they are given.

The wire layout (key names, stream names, row shapes) is that of the system
we replace; see `engine.keys` and DESIGN.md.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson

from . import codec, keys
from .config import Config, load_config
from .errors import NotFoundError, ValidationError
from .insights import EMBEDDING_LOG, Insights
from .local import LocalStore, WriteBatch
from .models import (
    ActionRecord,
    ContextState,
    EmbeddingVector,
    LogEntry,
    PatchRecord,
    RetrievalEventRecord,
    SignatureMetrics,
    TrainingMetrics,
    VerifierMetrics,
    signature_summary,
    verifier_summary,
)
from .querycache import GenerationCache, QueryTimings, space_dep
from .redact import propagate_signature_name, scrub_log_entry

R = TypeVar("R")


def _require(record: Any, cls: type[Any], what: str) -> None:
    if not isinstance(record, cls):
        raise ValidationError(f"{what} must be a {cls.__name__}, got {type(record).__name__}")
    record.validate()


def _loads(buf: memoryview | bytes) -> Any:
    return orjson.loads(buf)


class Engine(Insights):
    """A store of agent telemetry: local LMDB first, optionally replicated to RedDB.

    Open one with `engine.open()`. Thread-safe. Use it as a context manager or call `close()`.
    """

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or load_config()
        self.namespace = self.config.prefix  # the old manager's `namespace` attribute
        self.store = LocalStore(
            self.config.path,
            durable=self.config.durable,
            map_size=self.config.map_size,
            max_readers=self.config.max_readers,
            outbox=self.config.replicate,
        )
        self._lock = threading.RLock()
        self._closed = False
        self._extensions: list[Callable[[], None]] = []  # close hooks of attached layers
        self._columns: Any = None
        self._vectors = None
        self._vectors_upto = 0
        self._vectors_lock = threading.Lock()
        self.cache = GenerationCache(self.store, self.config.cache_size, self.config.cache_ttl)
        self.query_timings = QueryTimings()
        self.query_cache = GenerationCache(
            self.store, self.config.query_cache_size, self.config.query_cache_ttl, timings=self.query_timings
        )
        self._attach_layers()

    def _attach_layers(self) -> None:
        """Start the layers built on the data API: migrations, then replication when configured."""
        if self.config.auto_migrate:
            from .migrations import migrate_on_open

            migrate_on_open(self)
        self._syncer: Any = None
        if self.config.replicate:
            from .sync import Syncer

            self._syncer = Syncer(self)
            if self.config.auto_sync:
                self._syncer.start()
            self._extensions.append(self._syncer.stop)

    # ------------------------------------------------------------------ replication
    def sync_status(self) -> dict[str, Any]:
        """Replication state: backlog, lag, last error, sent, retries, duplicates avoided."""
        if self._syncer is None:
            return {"enabled": False, "backlog": self.store.outbox_size()}
        return dict(self._syncer.status())

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every write so far has reached RedDB; False if `timeout` seconds passed first."""
        if self._syncer is None:
            return True
        return bool(self._syncer.flush(timeout))

    def __repr__(self) -> str:
        mode = f"replicating to {self.config.reddb_url!r}" if self.config.replicate else "local only"
        return f"<{type(self).__name__} path={self.store.path!r} {mode}>"

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop background work and release the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for hook in reversed(self._extensions):
            hook()
        self.store.close()

    @contextmanager
    def batch(self) -> Iterator[Engine]:
        """Group any number of writes into one transaction: all of them commit, or none."""
        with self.store.write():
            yield self

    # ------------------------------------------------------------------ queries
    @property
    def columns(self) -> Any:
        """The typed numpy columns of every stream (`engine.columns.ColumnCache`), built on first use."""
        if self._columns is None:
            with self._lock:
                if self._columns is None:
                    from .columns import ColumnCache

                    self._columns = ColumnCache(self.store)
        return self._columns

    def query(self, stream: str) -> Any:
        """A `QueryBuilder` over one stream of this engine: `eng.query("rl_actions").since(hours=24)...`."""
        from .query import QueryBuilder

        return QueryBuilder(self, stream)

    # ------------------------------------------------------------------ helpers
    def key(self, category: str, ident: str) -> str:
        """The key-value key `{prefix}:{category}:{id}`."""
        return keys.kv_key(self.config.prefix, category, ident)

    def _kv_value(self, key: str) -> Any:
        return self.store.kv_get_with(key, codec.decode)

    def _append_record(self, batch: WriteBatch, stream: str, record: Any, record_id: str | None) -> int:
        row = codec.encode(record, checked=True)
        return self.store.append(batch, stream, row, record_id=record_id)

    def _newest(self, stream: str, limit: int, build: Callable[[dict[str, Any]], R]) -> list[R]:
        rows = self.store.read_tail(stream, limit, _loads)
        return [build(v) for _, v in reversed(rows)]

    def _newest_matching(
        self, stream: str, limit: int, keep: Callable[[dict[str, Any]], bool], build: Callable[[Any], R]
    ) -> list[R]:
        out: list[R] = []
        if limit <= 0:
            return out
        for _, row in self.store.iter_backward(stream, _loads, page=max(64, limit)):
            if keep(row):
                out.append(build(row))
                if len(out) >= limit:
                    break
        return out

    def _by_id(self, stream: str, record_id: str, build: Callable[[dict[str, Any]], R]) -> R | None:
        keys.check_name(record_id, "record id")
        loc = self.store.locate(record_id)
        if loc is None or loc[0] != stream:
            return None
        rows = self.store.read_with(stream, loc[1], 1, _loads)
        return build(rows[0][1]) if rows else None

    # ------------------------------------------------------------------ the seed's storage protocol
    def put(self, key: str, value: Any) -> None:
        """Store a JSON value under a raw key (no prefix), like the old `RedDBStorage.put`."""
        keys.check_name(key, "key")
        data = codec.encode(value)
        with self.store.write() as b:
            self.store.kv_put(b, key, data)

    def get(self, key: str) -> Any:
        """The value under `key`, or None when missing (use `get_or_raise` to tell a stored null apart)."""
        keys.check_name(key, "key")
        return self._kv_value(key)

    def get_or_raise(self, key: str) -> Any:
        """The value under `key`; NotFoundError when missing."""
        keys.check_name(key, "key")
        raw = self.store.kv_get(key)
        if raw is None:
            raise NotFoundError(f"no key {key!r}")
        return codec.decode(raw)

    def delete(self, key: str) -> bool:
        """Delete `key`; True if it existed."""
        keys.check_name(key, "key")
        with self.store.write() as b:
            existed = self.store.kv_delete(b, key)
            if key.startswith(self._embedding_prefix()):  # the vector mirror must drop it too
                self.store.append(b, EMBEDDING_LOG, key.encode(), replicate=False)
            return existed

    def append(self, stream: str, value: Any) -> int:
        """Append a JSON value to `stream`; returns its offset."""
        keys.check_name(stream, "stream")
        data = codec.encode(value)
        with self.store.write() as b:
            return self.store.append(b, stream, data)

    def read(self, stream: str, start: int = 0, count: int = 100) -> list[tuple[int, Any]]:
        """(offset, value) pairs with offset >= start, ascending, at most `count`."""
        keys.check_name(stream, "stream")
        if not isinstance(start, int) or not isinstance(count, int):
            raise ValidationError("start and count must be integers")
        return self.store.read_with(stream, start, count, _loads)

    def health_check(self) -> dict[str, Any]:
        """The old `health_check()` shape plus LMDB details; writes nothing."""
        info = self.store.info()
        out: dict[str, Any] = {
            "backend": "reddb" if self.config.replicate else "lmdb",
            "namespace": self.config.namespace,
            "mode": "replicating" if self.config.replicate else "local",
            "ok": True,
            "details": f"lmdb at {info['path']}",
            "lmdb": {k: info[k] for k in ("map_size", "map_used", "num_readers", "max_readers")},
        }
        return out

    # ------------------------------------------------------------------ embeddings
    def _embedding_blobs(self, e: EmbeddingVector) -> tuple[str, bytes, bytes]:
        _require(e, EmbeddingVector, "embedding")
        key = self.key(keys.EMBEDDINGS, e.id)
        header = {f.name: getattr(e, f.name) for f in dataclasses.fields(e) if f.name != "vector"}
        local = codec.encode_embedding(header, e.vector)
        wire = codec.encode(e, checked=True)
        return key, local, wire

    def store_embedding(self, embedding: EmbeddingVector) -> None:
        """Store one embedding (raw float32 locally, the seed's JSON on the wire)."""
        self.store_embeddings_batch([embedding])

    def store_embeddings_batch(self, embeddings: Iterable[EmbeddingVector]) -> int:
        """Store many embeddings in one transaction; returns how many."""
        blobs = [self._embedding_blobs(e) for e in embeddings]
        with self.store.write() as b:
            for key, local, wire in blobs:
                self.store.kv_put(b, key, local, wire=wire)
                self.store.append(b, EMBEDDING_LOG, key.encode(), replicate=False)
        return len(blobs)

    def get_embedding(self, vector_id: str) -> EmbeddingVector | None:
        """The embedding with this id, or None."""
        d = self._kv_value(self.key(keys.EMBEDDINGS, vector_id))
        return None if d is None else EmbeddingVector.from_json_row(d)

    # ------------------------------------------------------------------ signatures and verifiers
    def _register(self, b: WriteBatch, kind: str, name: str) -> None:
        key = self.key(keys.REGISTRIES, kind)
        raw = b.txn.get(key.encode(), db=self.store.db_kv)
        names = orjson.loads(raw) if raw is not None else []
        if not isinstance(names, list):
            names = []
        if name not in names:
            names.append(name)
            self.store.kv_put(b, key, codec.encode(names))

    def _registered(self, kind: str) -> list[str]:
        names = self._kv_value(self.key(keys.REGISTRIES, kind))
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

    def store_signature_metrics(self, metrics: SignatureMetrics) -> None:
        """Current state under `signatures:{name}`, a summary row in `signature_metrics`, name registered."""
        _require(metrics, SignatureMetrics, "signature metrics")
        key = self.key(keys.SIGNATURES, metrics.signature_name)
        full = codec.encode(metrics, checked=True)
        summary = codec.encode(signature_summary(metrics, time.time()), checked=True)
        with self.store.write() as b:
            self.store.kv_put(b, key, full)
            self.store.append(b, keys.SIGNATURE_METRICS, summary)
            self._register(b, keys.SIGNATURES, metrics.signature_name)

    def _cached_record(self, category: str, name: str, cls: Any) -> Any:
        key = self.key(category, name)
        d = self.cache.get_or_compute(
            (category, name),
            [space_dep(f"{self.config.prefix}:{category}")],
            lambda: self._kv_value(key),
        )
        return None if d is None else cls.from_json_row(d)

    def get_signature_metrics(self, signature_name: str) -> SignatureMetrics | None:
        """The current metrics of one signature, or None (read through the cache; never stale)."""
        return self._cached_record(keys.SIGNATURES, signature_name, SignatureMetrics)  # type: ignore[no-any-return]

    def get_all_signature_metrics(self) -> list[SignatureMetrics]:
        """Metrics of every registered signature (registry order)."""
        out = []
        for name in self._registered(keys.SIGNATURES):
            m = self.get_signature_metrics(name)
            if m is not None:
                out.append(m)
        return out

    def register_signature(self, signature_name: str) -> None:
        """Add a name to the signature registry (idempotent)."""
        keys.check_name(signature_name, "signature name")
        with self.store.write() as b:
            self._register(b, keys.SIGNATURES, signature_name)

    def store_verifier_metrics(self, metrics: VerifierMetrics) -> None:
        """Current state under `verifiers:{name}`, a summary row in `verifier_metrics`, name registered."""
        _require(metrics, VerifierMetrics, "verifier metrics")
        key = self.key(keys.VERIFIERS, metrics.verifier_name)
        full = codec.encode(metrics, checked=True)
        summary = codec.encode(verifier_summary(metrics, time.time()), checked=True)
        with self.store.write() as b:
            self.store.kv_put(b, key, full)
            self.store.append(b, keys.VERIFIER_METRICS, summary)
            self._register(b, keys.VERIFIERS, metrics.verifier_name)

    def get_verifier_metrics(self, verifier_name: str) -> VerifierMetrics | None:
        """The current metrics of one verifier, or None (read through the cache; never stale)."""
        return self._cached_record(keys.VERIFIERS, verifier_name, VerifierMetrics)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ caches
    def warm_cache(
        self, signatures: Iterable[str] | None = None, verifiers: Iterable[str] | None = None
    ) -> int:
        """Load these signatures' and verifiers' metrics into the cache; returns how many were found."""
        found = 0
        for name in signatures or ():
            found += self.get_signature_metrics(name) is not None
        for name in verifiers or ():
            found += self.get_verifier_metrics(name) is not None
        return found

    def clear_cache(self) -> None:
        """Empty both caches (never needed for correctness: entries die when what they read changes)."""
        self.cache.clear()
        self.query_cache.clear()

    def get_cache_stats(self) -> dict[str, dict[str, Any]]:
        """`{"main_cache": {...}, "query_cache": {...}}`: size, max_size, hits, misses, hit_rate, ..."""
        return {"main_cache": self.cache.stats(), "query_cache": self.query_cache.stats()}

    def get_all_verifier_metrics(self) -> list[VerifierMetrics]:
        """Metrics of every registered verifier (registry order)."""
        out = []
        for name in self._registered(keys.VERIFIERS):
            m = self.get_verifier_metrics(name)
            if m is not None:
                out.append(m)
        return out

    def register_verifier(self, verifier_name: str) -> None:
        """Add a name to the verifier registry (idempotent)."""
        keys.check_name(verifier_name, "verifier name")
        with self.store.write() as b:
            self._register(b, keys.VERIFIERS, verifier_name)

    # ------------------------------------------------------------------ training
    def store_training_metrics(self, metrics: TrainingMetrics) -> None:
        """Append one epoch's metrics to `training_history`."""
        _require(metrics, TrainingMetrics, "training metrics")
        with self.store.write() as b:
            self._append_record(b, keys.TRAINING_HISTORY, metrics, None)

    def get_training_history(self, limit: int = 100) -> list[TrainingMetrics]:
        """The newest `limit` training rows, newest first."""
        return self._newest(keys.TRAINING_HISTORY, limit, TrainingMetrics.from_json_row)

    # ------------------------------------------------------------------ actions
    def record_action(self, action: ActionRecord) -> int:
        """Append an action to `rl_actions`; returns its offset.

        A `signature_name` found in parameters, result, state_before or state_after (in that order) is copied
        into the other three in the stored row; the caller's record is not changed.
        """
        return self.record_actions_batch([action])[0]

    def record_actions_batch(self, actions: Iterable[ActionRecord]) -> list[int]:
        """Append many actions in one transaction (in the given order); returns their offsets."""
        prepared = []
        for a in actions:
            _require(a, ActionRecord, "action")
            stored = propagate_signature_name(a)
            prepared.append((codec.encode(stored, checked=True), a.action_id))
        append = self.store.append
        with self.store.write() as b:
            return [append(b, keys.RL_ACTIONS, row, record_id=rid) for row, rid in prepared]

    def get_recent_actions(self, limit: int = 100) -> list[ActionRecord]:
        """The newest `limit` actions, newest first."""
        return self._newest(keys.RL_ACTIONS, limit, ActionRecord.from_json_row)

    def get_action(self, action_id: str) -> ActionRecord | None:
        """One action by id (through the id index), or None."""
        return self._by_id(keys.RL_ACTIONS, action_id, ActionRecord.from_json_row)

    # ------------------------------------------------------------------ logs
    def log(self, entry: LogEntry) -> int:
        """Append a log entry to `system_logs` with secrets scrubbed (the caller's entry is unchanged)."""
        return self.log_batch([entry])[0]

    def log_batch(self, entries: Iterable[LogEntry]) -> list[int]:
        """Append many log entries in one transaction."""
        prepared = []
        for e in entries:
            _require(e, LogEntry, "log entry")
            prepared.append((codec.encode(scrub_log_entry(e), checked=True), e.log_id))
        with self.store.write() as b:
            return [self.store.append(b, keys.SYSTEM_LOGS, row, record_id=rid) for row, rid in prepared]

    def get_recent_logs(self, level: str | None = None, limit: int = 100) -> list[LogEntry]:
        """The newest `limit` log entries (of `level`, if given), newest first, however far back they are."""
        if level is None:
            return self._newest(keys.SYSTEM_LOGS, limit, LogEntry.from_json_row)
        return self._newest_matching(
            keys.SYSTEM_LOGS, limit, lambda r: r.get("level") == level, LogEntry.from_json_row
        )

    def get_log(self, log_id: str) -> LogEntry | None:
        """One log entry by id, or None."""
        return self._by_id(keys.SYSTEM_LOGS, log_id, LogEntry.from_json_row)

    # ------------------------------------------------------------------ retrieval events
    def record_retrieval_event(self, event: RetrievalEventRecord) -> int:
        """Append a retrieval event to `retrieval_events`."""
        _require(event, RetrievalEventRecord, "retrieval event")
        with self.store.write() as b:
            return self._append_record(b, keys.RETRIEVAL_EVENTS, event, event.event_id)

    def get_recent_retrieval_events(self, limit: int = 50) -> list[RetrievalEventRecord]:
        """The newest `limit` retrieval events, newest first."""
        return self._newest(keys.RETRIEVAL_EVENTS, limit, RetrievalEventRecord.from_json_row)

    # ------------------------------------------------------------------ context
    def store_context_state(self, context: ContextState) -> None:
        """Current context under `context:current` and a row in `context_history`."""
        _require(context, ContextState, "context state")
        data = codec.encode(context, checked=True)
        with self.store.write() as b:
            self.store.kv_put(b, self.key(keys.CONTEXT, "current"), data)
            self.store.append(b, keys.CONTEXT_HISTORY, data, record_id=context.context_id)

    def get_current_context(self) -> ContextState | None:
        """The current context, or None."""
        d = self._kv_value(self.key(keys.CONTEXT, "current"))
        return None if d is None else ContextState.from_json_row(d)

    # ------------------------------------------------------------------ patches
    def store_patch_record(self, patch: PatchRecord) -> int:
        """Append a patch record to `patch_history`."""
        _require(patch, PatchRecord, "patch record")
        with self.store.write() as b:
            return self._append_record(b, keys.PATCH_HISTORY, patch, patch.patch_id)

    def get_patch_history(self, limit: int = 50) -> list[PatchRecord]:
        """The newest `limit` patch records, newest first."""
        return self._newest(keys.PATCH_HISTORY, limit, PatchRecord.from_json_row)

    def get_patch(self, patch_id: str) -> PatchRecord | None:
        """One patch record by id, or None."""
        return self._by_id(keys.PATCH_HISTORY, patch_id, PatchRecord.from_json_row)

    # ------------------------------------------------------------------ health and trends
    def store_system_health(self, health: dict[str, Any]) -> None:
        """Current health under `health:current` and a row in `health_history` (timestamp added to a copy)."""
        if not isinstance(health, dict):
            raise ValidationError(f"health must be a dict, got {type(health).__name__}")
        row = {**health, "timestamp": time.time()}
        data = codec.encode(row)
        with self.store.write() as b:
            self.store.kv_put(b, self.key(keys.HEALTH, "current"), data)
            self.store.append(b, keys.HEALTH_HISTORY, data)

    def get_system_health(self) -> dict[str, Any] | None:
        """The current health dict, or None."""
        value = self._kv_value(self.key(keys.HEALTH, "current"))
        return value if isinstance(value, dict) else None

    def get_performance_trends(self, metric_type: str, hours: float = 24) -> dict[str, list[Any]]:
        """`{field: [values, oldest first]}` per number field of the `{metric_type}_metrics` window rows.

        Every row of the window counts (the old layer looked at the first 1,000 rows only).
        """
        stream = keys.check_name(f"{metric_type}_metrics", "metric stream")
        cutoff = time.time() - hours * 3600
        rows = [
            row
            for _, row in self.store.iter_backward(stream, _loads, page=1024)
            if isinstance(row, dict)
            and isinstance(row.get("timestamp"), (int, float))
            and row["timestamp"] >= cutoff
        ]
        trends: dict[str, list[Any]] = {}
        for row in reversed(rows):
            for k, v in row.items():
                if k != "timestamp" and isinstance(v, (int, float)):
                    trends.setdefault(k, []).append(v)
        return trends

    # ------------------------------------------------------------------ monitoring
    def stats(self) -> dict[str, Any]:
        """What `python -m engine stats` shows: volume, LMDB health, caches, query times, migrations,
        error patterns, and the sync backlog when replicating."""
        from .stats import collect_stats

        return collect_stats(self)

    # ------------------------------------------------------------------ volume
    def stream_counts(self) -> dict[str, int]:
        """Rows per stream (internal streams excluded)."""
        return {k: v for k, v in self.store.stream_lengths().items() if not k.startswith("__")}
