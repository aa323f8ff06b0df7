"""Replication: drain the LMDB outbox to RedDB in order, exactly once (the CLI commands are in cli.py).

Every replicated write put an outbox entry in the same LMDB transaction as its data (engine.local).
A `Syncer` sends those entries to RedDB and deletes them only after RedDB acknowledged them.

How it is shaped, and why:
- Rounds. A driver thread peeks the oldest `window` entries and groups them into lanes: one lane per
  stream (its appends, strictly in outbox order, one request at a time) and one per key (several
  puts/deletes of a key collapse to the last one). A small thread pool runs the lanes; the protocol
  has no batch endpoint, so speed comes from requests in flight on several lanes over keep-alive
  connections. Each lane deletes what was acknowledged every `ack_every` entries, in one LMDB
  transaction that also records the stream's last acknowledged remote offset and the counters.
- Exactly once. Appends are not idempotent. A lane never sends an entry before every earlier entry
  of its stream is known to have landed, so the entries that landed without being deleted (after an
  ambiguous failure: timeout, reset, 5xx or garbage after sending; or a crash between the answer and
  the delete) are always a prefix of the stream's pending entries. Before sending, a lane that is not
  verified (first time after taking the lock, or after an ambiguous failure) reads the remote stream
  back from its last acknowledged offset + 1 and matches that prefix in order: by record id in the
  row's id field (action_id, log_id, ...), else by canonical value (orjson.loads on both sides).
  Other agents' rows may interleave; they are skipped. Before the first append to a stream ever, the
  remote end is found (binary search on `read`) and stored as the floor, so a read-back never starts
  from 0 in a stream that other agents filled. Limit: an append the server is still processing when
  the read-back runs (after the client's read timeout and a backoff) can land afterwards.
- Failures. Every failure is counted and the last one kept (token redacted). A lane retries a
  transient failure (no answer, 5xx) in place, after a backoff and a read-back, up to `lane_retries`
  times in a row; then, or after a 4xx, the lane backs off (capped exponential, full jitter) while
  other lanes continue. After `breaker_threshold` consecutive failures the circuit opens and only a
  `/health` probe runs until RedDB answers. A 401 stops the syncer (state "auth_failed");
  `flush()` and `drain_once()` then raise AuthError.
- Speed. For a plain-http URL the client it builds uses `KeepAliveTransport` (one sendall() per
  request); RedDBClient still owns URLs, auth, timeouts and the error table.
- One drainer per store: `fcntl.flock` on `<store>/sync.lock`, held while draining and released by
  the kernel when the process dies. Other processes keep writing locally and report draining=False.
- Bookkeeping (acknowledged offsets, counters, lag marks) lives in the meta sub-database under
  `sync:<target>:`, target = hash of URL and namespace: engine.syncstate.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from .errors import AuthError, ClosedStoreError, ConfigError, RemoteError, SyncError
from .local import OP_APPEND, OP_PUT
from .remote import RedDBClient, client_for, is_ambiguous, remote_end
from .syncstate import COUNTERS, SyncState

__all__ = ["Syncer", "backoff_delay"]

_log = logging.getLogger("engine.sync")
# where a record's id lives in its row, by the stream the engine writes it to
ID_FIELDS = ("action_id", "log_id", "event_id", "patch_id", "context_id", "session_id", "id")
STREAM_ID_FIELD = {
    "rl_actions": "action_id",
    "system_logs": "log_id",
    "retrieval_events": "event_id",
    "patch_history": "patch_id",
    "context_history": "context_id",
}
_SYNCERS: weakref.WeakSet[Syncer] = weakref.WeakSet()


def _forget_locks_in_child() -> None:
    # a forked child inherits the sync lock's descriptor; closing its copy (never LOCK_UN, which
    # would release the parent's lock) keeps a long-lived child from holding the lock after we die
    for syncer in list(_SYNCERS):
        fd, syncer._lock_fd = syncer._lock_fd, None
        if fd is not None:
            os.close(fd)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt counts from 0)."""
    return rng.uniform(0.0, min(cap, base * (2 ** min(attempt, 40))))


class _Entry:
    __slots__ = ("_value", "name", "op", "payload", "rid", "seq")

    def __init__(self, seq: int, op: bytes, name: str, rid: str | None, payload: bytes) -> None:
        self.seq, self.op, self.name, self.rid, self.payload = seq, op, name, rid, payload
        self._value: Any = self

    def value(self) -> Any:
        if self._value is self:
            self._value = orjson.loads(self.payload)
        return self._value

    def same_as(self, remote: Any) -> bool:
        """True when `remote` (a row read back from RedDB) is this entry."""
        value = self.value()
        if self.rid is not None and isinstance(value, dict):
            for f in ID_FIELDS:
                if value.get(f) == self.rid:
                    return isinstance(remote, dict) and remote.get(f) == self.rid
        return bool(value == remote)


class Syncer:
    """Drains one store's outbox to RedDB; see the module docstring. Thread-safe.

    Knobs (seconds unless noted): workers (lanes in flight), window (entries per round), ack_every
    (entries per delete transaction), lane_retries (transient failures a lane retries in place, with
    backoff and a read-back, before giving up its round), backoff_base/backoff_cap,
    breaker_threshold (failures in a row) and breaker_cooldown, idle_poll, lock_poll, mark_every (lag
    sampling), connect_timeout/read_timeout (for the client built from the engine's config when
    `client` is None), clock (wall time for status), rng (jitter).
    """

    def __init__(
        self,
        engine: Any,
        *,
        client: RedDBClient | None = None,
        workers: int = 4,
        window: int = 2000,
        ack_every: int = 256,
        lane_retries: int = 3,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 1.0,
        idle_poll: float = 0.05,
        lock_poll: float = 0.5,
        mark_every: float = 0.5,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if workers < 1 or window < 1 or ack_every < 1 or breaker_threshold < 1:
            raise ConfigError("workers, window, ack_every and breaker_threshold must be >= 1")
        cfg = engine.config
        self.store = engine.store
        self._owns_client = client is None
        if client is None and not cfg.reddb_url:
            raise ConfigError("replication needs a RedDB URL", hint="set REDDB_URL")
        self._timeouts = (connect_timeout, read_timeout)
        self._token = cfg.reddb_token
        self.client: RedDBClient = client or self._new_client(cfg.reddb_url, cfg.namespace, workers)
        # what to redact from error text: the configured token and the one the client really sends
        self._secrets = [t for t in (cfg.reddb_token, getattr(self.client, "_token", None)) if t]
        ident = f"{self.client.url}\x1f{self.client.namespace}".encode()
        target = hashlib.blake2b(ident, digest_size=6).hexdigest()
        self.workers, self.window, self.ack_every = workers, window, ack_every
        self.lane_retries = lane_retries
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.breaker_threshold, self.breaker_cooldown = breaker_threshold, breaker_cooldown
        self.idle_poll, self.lock_poll = idle_poll, lock_poll
        self._clock = clock
        self._rng = rng or random.Random()
        self._mu = threading.Lock()  # counters, errors, lanes, breaker
        self._round_mu = threading.Lock()  # one round at a time (driver thread or drain_once)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock_fd: int | None = None
        self._lock_busy = False
        self.state = SyncState(self.store, target, clock, mark_every)
        self._counters = self.state.load_counters()
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._auth_error: str | None = None
        self._consecutive = 0
        self._breaker_until: float | None = None  # monotonic; None = closed
        self._breaker_trips = 0
        self._lanes: dict[tuple[str, str], list[float]] = {}  # lane -> [failed attempts, retry at]
        self._verified: set[str] = set()  # streams whose landed-but-pending prefix is known empty
        _SYNCERS.add(self)

    def __repr__(self) -> str:
        with self._mu:
            state = self._state()
        return f"<Syncer url={self.client.url!r} namespace={self.client.namespace!r} state={state!r}>"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the background driver thread (idempotent); clears a previous auth failure."""
        old = self._thread
        if old is not None and old.is_alive():
            if not self._stop.is_set():
                return
            old.join()  # a stop() that timed out: let that driver finish first
        with self._mu:
            if self._owns_client and getattr(self.client, "_closed", False):
                self.client = self._new_client(self.client.url, self.client.namespace, self.workers)
            self._stop.clear()
            self._auth_error = None
            self._thread = threading.Thread(target=self._run, name="engine-sync", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop draining (pending entries stay in the outbox), release the lock, close our client.

        Waits up to `timeout` seconds for the requests in flight to finish. If one is still running
        then, our own client is closed under it, and the driver thread gives the lock back as it
        exits (never earlier: another drainer must not start while an append is in flight).
        """
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive() and self._owns_client:
                self.client.close()
                thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        if (thread is None or not thread.is_alive()) and self._round_mu.acquire(
            timeout=max(0.0, deadline - time.monotonic())
        ):
            try:
                if self._pool is not None:
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = None
                self._release()
            finally:
                self._round_mu.release()
        if self._owns_client:
            self.client.close()

    def _new_client(self, url: str, namespace: str, workers: int) -> RedDBClient:
        return client_for(
            url,
            token=self._token,
            namespace=namespace,
            connect_timeout=self._timeouts[0],
            read_timeout=self._timeouts[1],
            max_connections=workers + 2,
        )

    # ------------------------------------------------------------------ public API
    def status(self) -> dict[str, Any]:
        """Replication state: backlog, lag, errors, counters, state; never contains the token."""
        self.state.sample_marks()
        with self._mu:
            counters = dict(self._counters) if self._lock_fd is not None else self.state.load_counters()
            out: dict[str, Any] = {
                "enabled": True,
                "running": self._running(),
                "draining": self._lock_fd is not None,
                "lock": "held"
                if self._lock_fd is not None
                else ("another process is draining" if self._lock_busy else "not held"),
                "state": self._state(),
                "last_error": self._last_error,
                "last_error_at": self._last_error_at,
                "consecutive_failures": self._consecutive,
                "url": self.client.url,
                "namespace": self.client.namespace,
            }
        out.update({k: counters.get(k, 0) for k in COUNTERS})
        out["last_success_at"] = counters.get("last_success_at")
        out["backlog"] = self.store.outbox_size()
        out["lag_seconds"] = self.state.lag()
        return out

    def drain_once(self) -> int:
        """One round in the calling thread: entries delivered (sent or found already there).

        Raises the round's first failure after committing what was delivered (AuthError for a
        401), and SyncError when another process holds the store's sync lock.
        """
        self._not_in_batch("drain_once")
        with self._round_mu:
            if self._auth_error is not None:
                raise AuthError(self._auth_error, status=401)
            took = False
            if self._lock_fd is None:
                if not self._try_lock():
                    raise SyncError(f"another process is draining the outbox of {self.store.path}")
                took = True
            try:
                delivered, errors = self._round()
            finally:
                if took and not self._running():
                    self._release()
        if errors:
            raise errors[0]
        return delivered

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every entry in the outbox now has reached RedDB; False if `timeout` passed first.

        Drains in the calling thread when the driver thread is not running. Raises AuthError once the
        token was rejected.
        """
        self._not_in_batch("flush")
        deadline = None if timeout is None else time.monotonic() + timeout
        target = self.state.next_seq()
        attempt = 0
        while True:
            if self._auth_error is not None:
                raise AuthError(self._auth_error, status=401)
            oldest = self.state.oldest_seq()
            if oldest is None or oldest >= target:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if self._running():
                self._wake.set()
                time.sleep(0.01 if left is None else min(0.01, left))
                continue
            try:
                self.drain_once()
                attempt = 0
            except AuthError:
                raise
            except (RemoteError, SyncError):
                pause = max(backoff_delay(attempt, self.backoff_base, self.backoff_cap, self._rng), 0.01)
                attempt += 1
                time.sleep(pause if left is None else min(pause, left))

    def _not_in_batch(self, what: str) -> None:
        if getattr(self.store._tls, "batch", None) is not None:
            raise SyncError(
                f"{what}() inside an open write batch would wait for its own transaction",
                hint="call it after the `with engine.batch():` block",
            )

    # ------------------------------------------------------------------ driver
    def _running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        trouble = 0
        while not self._stop.is_set():
            try:
                if self._lock_fd is None and not self._try_lock():
                    self._stop.wait(self.lock_poll)
                    continue
                if not self._breaker_allows():
                    continue
                with self._round_mu:
                    if self._stop.is_set():
                        break
                    delivered, _ = self._round()
                trouble = 0
                if delivered == 0 and not self._stop.is_set():
                    self._wake.wait(self._idle_delay())
                    self._wake.clear()
            except ClosedStoreError:
                break
            except Exception as exc:  # e.g. a storage error: keep it in status, back off, go on
                if self._stop.is_set():
                    break
                self._failed(exc)
                _log.warning("replication round failed: %s", self._redact(str(exc)))
                self._stop.wait(backoff_delay(trouble, self.backoff_base, self.backoff_cap, self._rng))
                trouble += 1
        with self._round_mu:
            if self._stop.is_set() and self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None
            self._release()

    def _release(self) -> None:
        """Persist the counters and give the sync lock back."""
        if self._lock_fd is not None:
            with contextlib.suppress(Exception), self._mu:
                snapshot = orjson.dumps(self._counters)
                with self.store.write() as b:
                    self.state.put_counters(b, snapshot)
        self._unlock()

    def _idle_delay(self) -> float:
        now = time.monotonic()
        with self._mu:
            waits = [at - now for _, at in self._lanes.values() if at > now]
        if not waits:
            return self.idle_poll
        # every pending lane is backing off: sleep until the first retry, but keep seeing new lanes
        return min(max(0.001, min(waits)), max(self.idle_poll, 0.25))

    def _breaker_allows(self) -> bool:
        with self._mu:
            until = self._breaker_until
        if until is None:
            return True
        left = until - time.monotonic()
        if left > 0:
            self._stop.wait(left)
            return False
        try:
            self.client.health()
        except Exception as exc:
            self._failed(exc)
            with self._mu:
                self._breaker_trips += 1
                delay = self.breaker_cooldown * 2 ** min(self._breaker_trips, 6)
                self._breaker_until = time.monotonic() + self._rng.uniform(0.5, 1.0) * delay
            return False
        with self._mu:  # half-open: one more failure opens it again
            self._breaker_until = None
            self._consecutive = self.breaker_threshold - 1
            self._lanes = {lane: [n, 0.0] for lane, (n, _) in self._lanes.items()}
        _log.info("RedDB at %s answers again; resuming replication", self.client.url)
        return True

    # ------------------------------------------------------------------ one round
    def _round(self) -> tuple[int, list[BaseException]]:
        self.state.sample_marks()
        entries = self._peek()
        if not entries:
            return 0, []
        streams: dict[str, list[_Entry]] = {}
        keys: dict[str, list[_Entry]] = {}
        for e in entries:
            (streams if e.op == OP_APPEND else keys).setdefault(e.name, []).append(e)
        jobs: list[tuple[Callable[..., tuple[int, BaseException | None]], Any]] = [
            (self._send_stream, (name, lane)) for name, lane in streams.items()
        ]
        items = list(keys.items())
        n = min(self.workers, len(items))
        jobs += [(self._send_keys, (items[i::n],)) for i in range(n)]
        with self._mu:
            for lane in [("s", s) for s in streams] + [("k", k) for k in keys]:
                if lane in self._lanes:
                    self._counters["retries"] += 1
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="engine-sync")
        futures = [self._pool.submit(fn, *args) for fn, args in jobs]
        delivered, errors = 0, []
        for fut in futures:
            done, err = fut.result()
            delivered += done
            if err is not None:
                errors.append(err)
        auth = [e for e in errors if isinstance(e, AuthError)]
        return delivered, auth + [e for e in errors if not isinstance(e, AuthError)]

    def _peek(self) -> list[_Entry]:
        """The oldest `window` entries of lanes not backing off; a lane that failed before gets one
        entry (a probe), so it cannot crowd the window while other lanes could make progress."""
        now = time.monotonic()
        with self._mu:
            blocked = {lane for lane, (_, at) in self._lanes.items() if at > now}
            probing = set(self._lanes) - blocked
        out: list[_Entry] = []
        scan_limit = self.window * 20
        with self.store.read_txn() as txn:
            for scanned, (seq, (op, name, rid, payload)) in enumerate(self.store.outbox_entries(txn), 1):
                lane = ("s" if op == OP_APPEND else "k", name)
                if lane not in blocked:
                    out.append(_Entry(seq, op, name, rid, payload))
                    if lane in probing:
                        blocked.add(lane)
                if len(out) >= self.window or scanned >= scan_limit:
                    break
        return out

    # ------------------------------------------------------------------ lanes (pool threads)
    def _send_stream(self, name: str, lane: list[_Entry]) -> tuple[int, BaseException | None]:
        delivered = attempt = 0
        while True:
            acked: list[tuple[int, int]] = []
            before = delivered
            try:
                if name not in self._verified:
                    found = self._reconcile(name, lane)
                    delivered += len(found)
                    lane = lane[len(found) :]
                if lane and self.state.ack_offset(name) is None:
                    self._set_floor(name)
                for e in lane:
                    if self._stop.is_set():
                        break
                    acked.append((e.seq, self.client.append_raw(name, e.payload)))
                    self._succeeded()
                    if len(acked) >= self.ack_every:
                        delivered += self._commit(name, acked, "sent")
                        lane, acked = lane[len(acked) :], []
                delivered += self._commit(name, acked, "sent")
                self._lane_ok(("s", name))
                return delivered, None
            except BaseException as exc:
                if is_ambiguous(exc) or not isinstance(exc, RemoteError):
                    self._verified.discard(name)  # read back before sending again
                with contextlib.suppress(Exception):
                    delivered += self._commit(name, acked, "sent")
                    lane = lane[len(acked) :]
                attempt = 0 if delivered > before else attempt  # progress earns a fresh budget
                if not self._retry_inline(exc, attempt):
                    self._lane_backoff(("s", name))
                    return delivered, exc
                attempt += 1

    def _send_keys(self, items: list[tuple[str, list[_Entry]]]) -> tuple[int, BaseException | None]:
        done: list[int] = []
        delivered = 0
        for key, entries in items:
            if self._stop.is_set():
                break
            last = entries[-1]
            for attempt in range(self.lane_retries + 1):
                try:
                    if last.op == OP_PUT:
                        self.client.kv_put_raw(key, last.payload)
                    else:
                        self.client.kv_delete(key)
                    break
                except BaseException as exc:
                    if not self._retry_inline(exc, attempt):
                        with contextlib.suppress(Exception):
                            delivered += self._commit(None, [(s, 0) for s in done], "sent")
                        self._lane_backoff(("k", key))
                        return delivered, exc
            self._succeeded()
            self._lane_ok(("k", key))
            done.extend(e.seq for e in entries)
            if len(done) >= self.ack_every:
                delivered += self._commit(None, [(s, 0) for s in done], "sent")
                done = []
        delivered += self._commit(None, [(s, 0) for s in done], "sent")
        return delivered, None

    def _retry_inline(self, exc: BaseException, attempt: int) -> bool:
        """Count the failure; after a transient one, back off in this lane and say whether to retry.

        Transient: no answer, a 5xx, a 408/429, or an unusable 200. Not while the circuit is open.
        """
        self._failed(exc)
        status = getattr(exc, "status", 0)
        transient = isinstance(exc, RemoteError) and (status in (None, 200, 408, 429) or status >= 500)
        if not transient or attempt >= self.lane_retries or self._stop.is_set():
            return False
        with self._mu:
            if self._breaker_until is not None or isinstance(exc, AuthError):
                return False
            self._counters["retries"] += 1
        return not self._stop.wait(backoff_delay(attempt, self.backoff_base, self.backoff_cap, self._rng))

    def _reconcile(self, name: str, lane: list[_Entry]) -> list[tuple[int, int]]:
        """Read back from the last acknowledged offset; commit and return the lane prefix already there."""
        floor = self.state.ack_offset(name)
        if floor is None:  # the floor is stored before the first send: nothing of ours can be there
            self._verified.add(name)
            return []
        found: list[tuple[int, int]] = []
        for offset, value in self.client.iter_stream(name, floor + 1, page=1000):
            if lane[len(found)].same_as(value):
                found.append((lane[len(found)].seq, offset))
                if len(found) == len(lane):
                    break  # more may have landed beyond this window: stay unverified
        with self._mu:
            self._counters["reconciles"] += 1
        self._commit(name, found, "duplicates_avoided")
        if len(found) < len(lane):
            self._verified.add(name)
        if found:
            _log.info("RedDB stream %r already had %d pending entries; not re-sending them", name, len(found))
        return found

    def _set_floor(self, name: str) -> None:
        end = remote_end(self.client, name)
        with self.store.write() as b:
            self.state.put_ack(b, name, end - 1)

    def _commit(self, stream: str | None, acked: list[tuple[int, int]], counter: str) -> int:
        """Delete delivered entries; record the stream's last remote offset and the counters."""
        if not acked:
            return 0
        store = self.store
        now = self._clock()
        counted = False
        try:
            with store.write() as b:
                store.outbox_delete(b, (seq for seq, _ in acked))
                if stream is not None:
                    self.state.put_ack(b, stream, acked[-1][1])
                with self._mu:  # inside the (serialised) transaction: each snapshot has every earlier count
                    self._counters[counter] += len(acked)
                    self._counters["last_success_at"] = now
                    counted = True
                    snapshot = orjson.dumps(self._counters)
                self.state.put_counters(b, snapshot)
        except BaseException:
            if counted:
                with self._mu:
                    self._counters[counter] -= len(acked)
            if stream is not None:  # landed but still pending: read back before sending again
                self._verified.discard(stream)
            raise
        return len(acked)

    # ------------------------------------------------------------------ failures
    def _succeeded(self) -> None:
        with self._mu:
            self._consecutive = 0
            self._breaker_trips = 0

    def _lane_ok(self, lane: tuple[str, str]) -> None:
        if lane in self._lanes:
            with self._mu:
                self._lanes.pop(lane, None)

    def _lane_backoff(self, lane: tuple[str, str]) -> None:
        with self._mu:
            attempts = self._lanes.get(lane, [0, 0.0])[0]
            delay = backoff_delay(int(attempts), self.backoff_base, self.backoff_cap, self._rng)
            self._lanes[lane] = [attempts + 1, time.monotonic() + delay]

    def _failed(self, exc: BaseException) -> None:
        text = self._redact(f"{type(exc).__name__}: {exc}")
        with self._mu:
            self._counters["failures"] += 1
            self._last_error, self._last_error_at = text, self._clock()
            self._consecutive += 1
            if isinstance(exc, AuthError):
                self._auth_error = self._redact(str(exc))
                self._stop.set()
                self._wake.set()
            elif self._consecutive >= self.breaker_threshold and self._breaker_until is None:
                self._breaker_until = time.monotonic() + self._rng.uniform(0.5, 1.0) * self.breaker_cooldown
                _log.warning("RedDB failing (%d in a row), circuit open: %s", self._consecutive, text)
                return
        if isinstance(exc, AuthError):
            _log.error("RedDB rejected the token; replication stopped: %s", text)
        else:
            _log.debug("replication failure: %s", text)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _state(self) -> str:
        if self._auth_error is not None:
            return "auth_failed"
        if not self._running():
            return "stopped"
        if self._breaker_until is not None:
            return "circuit_open"
        now = time.monotonic()
        return "backing_off" if any(at > now for _, at in self._lanes.values()) else "ok"

    # ------------------------------------------------------------------ lock
    def _try_lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        fd = os.open(os.path.join(self.store.path, "sync.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._lock_busy = True
            return False
        self._lock_fd, self._lock_busy = fd, False
        with self._mu:  # another process may have drained (or crashed mid-drain) since we last held it
            self._verified.clear()
            self._counters = self.state.load_counters()
        return True

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock
