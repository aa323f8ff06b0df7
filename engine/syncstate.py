"""What the syncer remembers in the store's meta sub-database, so a restart (or another process
taking over the drain) continues where the last drainer stopped.

Keys, per replication target (`target` = a hash of RedDB URL and namespace, so two targets never share
state):
- `sync:<target>:ack:<stream>`: the remote offset of the stream's last acknowledged append, as a
  big-endian i64 (before the first append ever: the remote end found then, minus one). A read-back
  after an ambiguous failure starts after it.
- `sync:<target>:counters`: the counters of `Syncer.status()` (sent, retries, failures,
  duplicates_avoided, reconciles, last_success_at) as JSON.
And one key for the whole store:
- `sync:marks`: `[[next outbox seq, wall time first seen], ...]`, sampled at most every `mark_every`
  seconds while entries are pending; `lag()` is the age of the oldest pending entry counted from when
  the sync layer first saw it (a lower bound; 0.0 when nothing is pending).
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
import time
from collections.abc import Callable
from typing import Any

import orjson

from .errors import ClosedStoreError
from .local import LocalStore

__all__ = ["COUNTERS", "SyncState"]

COUNTERS = ("sent", "retries", "failures", "duplicates_avoided", "reconciles")
_MAX_MARKS = 128
_MARKS_KEY = b"sync:marks"
_I64 = struct.Struct(">q")


class SyncState:
    """The meta-database bookkeeping of one store's replication to one target."""

    def __init__(self, store: LocalStore, target: str, clock: Callable[[], float], mark_every: float) -> None:
        self.store = store
        self.prefix = f"sync:{target}:"
        self._clock = clock
        self.mark_every = mark_every
        self._last_mark = 0.0

    # ------------------------------------------------------------------ acknowledged offsets
    def _ack_key(self, stream: str) -> str:
        if len(stream.encode()) > 300:
            stream = "#" + hashlib.blake2b(stream.encode(), digest_size=16).hexdigest()
        return f"{self.prefix}ack:{stream}"

    def ack_offset(self, stream: str) -> int | None:
        """The remote offset of `stream`'s last acknowledged append; None before the first one."""
        raw = self.store.meta_get(self._ack_key(stream))
        return None if raw is None else int(_I64.unpack(raw)[0])

    def put_ack(self, batch: Any, stream: str, offset: int) -> None:
        """Record `offset` as `stream`'s last acknowledged remote offset, in `batch`'s transaction."""
        self.store.meta_put(batch, self._ack_key(stream), _I64.pack(offset))

    # ------------------------------------------------------------------ counters
    def load_counters(self) -> dict[str, Any]:
        """The stored counters (zeros and last_success_at=None when none were stored)."""
        raw = self.store.meta_get(self.prefix + "counters")
        base: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
        base["last_success_at"] = None
        if raw is not None:
            base.update(orjson.loads(raw))
        return base

    def put_counters(self, batch: Any, snapshot: bytes) -> None:
        """Store the counters (`orjson.dumps` of the dict) in `batch`'s transaction."""
        self.store.meta_put(batch, self.prefix + "counters", snapshot)

    # ------------------------------------------------------------------ outbox position and lag
    def next_seq(self) -> int:
        """The sequence number the next outbox entry will get."""
        with self.store.read_txn() as txn:
            return self.store.outbox_bounds(txn)[1]

    def oldest_seq(self) -> int | None:
        """The oldest pending outbox entry's sequence number; None when the outbox is empty."""
        with self.store.read_txn() as txn:
            return self.store.outbox_bounds(txn)[0]

    def sample_marks(self) -> None:
        """Add a lag mark when the outbox grew and drop delivered ones; at most every `mark_every` s."""
        now = time.monotonic()
        if now - self._last_mark < self.mark_every:
            return
        self._last_mark = now
        with contextlib.suppress(ClosedStoreError):
            with self.store.read_txn() as txn:
                marks, new = self._marks(txn)
            if new != marks:  # read, modify and write again in one write transaction
                with self.store.write() as b:
                    marks, new = self._marks(b.txn)
                    if new != marks:
                        b.txn.put(_MARKS_KEY, orjson.dumps(new), db=self.store.db_meta)

    def _marks(self, txn: Any) -> tuple[list[list[float]], list[list[float]]]:
        """(stored marks, updated marks): drop those at or below the oldest pending entry, add
        [next outbox seq, now] when the outbox grew since the last one, thin out past _MAX_MARKS."""
        raw = txn.get(_MARKS_KEY, db=self.store.db_meta)
        marks = orjson.loads(raw) if raw is not None else []
        oldest, nxt = self.store.outbox_bounds(txn)
        if oldest is None:
            return marks, []
        new = [m for m in marks if m[0] > oldest]
        if not new or nxt > new[-1][0]:
            new.append([nxt, self._clock()])
        if len(new) > _MAX_MARKS:
            new = new[:1] + new[1:-1:2] + new[-1:]
        return marks, new

    def lag(self) -> float:
        """Seconds since the oldest pending entry was first seen by the sync layer (0.0 when none)."""
        oldest = self.oldest_seq()
        raw = self.store.meta_get(_MARKS_KEY.decode())
        if oldest is None or raw is None:
            return 0.0
        for seq, seen in orjson.loads(raw):
            if seq > oldest:
                return max(0.0, self._clock() - seen)
        return 0.0
