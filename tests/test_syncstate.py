"""engine.syncstate: the syncer's bookkeeping in the meta sub-database, directly on a LocalStore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from engine.local import LocalStore
from engine.syncstate import COUNTERS, SyncState


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    s = LocalStore(tmp_path / "s", outbox=True, durable=False)
    yield s
    s.close()


def pending(store: LocalStore, n: int) -> None:
    with store.write() as b:
        for i in range(n):
            store.append(b, "events", orjson.dumps({"i": i}))


def test_ack_offsets_per_target_and_stream(store: LocalStore) -> None:
    a, b = SyncState(store, "aaaa", lambda: 0.0, 0.5), SyncState(store, "bbbb", lambda: 0.0, 0.5)
    long_name = "s" * 400  # over an LMDB key's room: stored under a hash, still distinct
    assert a.ack_offset("x") is None
    with store.write() as batch:
        a.put_ack(batch, "x", 41)
        a.put_ack(batch, long_name, -1)
        a.put_ack(batch, long_name[:-1] + "t", 7)
    assert (a.ack_offset("x"), a.ack_offset(long_name), a.ack_offset(long_name[:-1] + "t")) == (41, -1, 7)
    assert b.ack_offset("x") is None  # another target never sees it


def test_counters_default_and_round_trip(store: LocalStore) -> None:
    state = SyncState(store, "t", lambda: 0.0, 0.5)
    assert state.load_counters() == dict.fromkeys(COUNTERS, 0) | {"last_success_at": None}
    with store.write() as batch:
        state.put_counters(batch, orjson.dumps({"sent": 5, "last_success_at": 12.5}))
    assert state.load_counters()["sent"] == 5 and state.load_counters()["last_success_at"] == 12.5


def test_lag_counts_from_when_the_oldest_pending_entry_was_first_seen(store: LocalStore) -> None:
    now = [1000.0]
    state = SyncState(store, "t", lambda: now[0], 0.0)
    assert state.lag() == 0.0 and state.oldest_seq() is None
    pending(store, 3)
    state.sample_marks()
    now[0] = 1004.0
    pending(store, 2)
    state.sample_marks()  # a second mark for the newer entries
    assert state.lag() == 4.0  # the oldest entry was first seen at 1000
    oldest, nxt = state.oldest_seq(), state.next_seq()
    assert oldest is not None and nxt == oldest + 5
    with store.write() as b:  # the first three delivered: lag now counts from the second mark
        store.outbox_delete(b, range(oldest, oldest + 3))
    now[0] = 1010.0
    assert state.lag() == 6.0
    with store.write() as b:
        store.outbox_delete(b, range(oldest + 3, nxt))
    state.sample_marks()
    assert state.lag() == 0.0


def test_marks_are_thinned_but_keep_the_oldest(store: LocalStore) -> None:
    now = [0.0]
    state = SyncState(store, "t", lambda: now[0], 0.0)
    for i in range(300):
        now[0] = float(i)
        pending(store, 1)
        state.sample_marks()
    marks = orjson.loads(store.meta_get("sync:marks") or b"[]")
    assert len(marks) <= 129 and marks[0][1] == 0.0 and marks[-1][1] == 299.0
    assert state.lag() == 299.0
