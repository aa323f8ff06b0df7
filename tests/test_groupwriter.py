"""engine.groupwriter: the server's group-commit writer thread, in process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engine.errors import StorageError
from engine.groupwriter import APPEND, PUT, GroupWriter
from engine.local import LocalStore


def test_writes_queued_during_a_commit_share_one_transaction(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "d", durable=False)

    async def scenario() -> list[int]:
        writer = GroupWriter(store, asyncio.get_running_loop())
        try:
            before = store.last_txn_id()
            blocker = store.env.begin(write=True)  # the writer thread will wait for LMDB's write lock
            futures = [writer.submit(APPEND, "s", b"%d" % i) for i in range(50)]
            await asyncio.sleep(0.05)
            assert not any(f.done() for f in futures)  # nothing is acknowledged before its commit
            blocker.abort()
            offsets = await asyncio.gather(*futures)
            # whatever the writer had taken before it blocked, then everything else at once
            assert store.last_txn_id() - before <= 2
            return offsets
        finally:
            writer.close()

    try:
        assert asyncio.run(scenario()) == list(range(50))
        assert store.read("s", 0, 100) == [(i, b"%d" % i) for i in range(50)]
    finally:
        store.close()


def test_one_failing_write_does_not_fail_its_group(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "d", durable=False)
    loop = asyncio.new_event_loop()
    writer = GroupWriter(store, loop)
    try:
        fut: Any = None  # _commit does not touch the futures
        items = [(APPEND, "ok", b"1", fut), (PUT, "k" * 600, b"2", fut), (APPEND, "ok", b"3", fut)]
        results = writer._commit(items)
        assert results[0] == 0 and results[2] == 1
        assert isinstance(results[1], StorageError)  # LMDB keys are at most 511 bytes
        assert store.read("ok", 0, 10) == [(0, b"1"), (1, b"3")]
    finally:
        writer.close()
        loop.close()
        store.close()
