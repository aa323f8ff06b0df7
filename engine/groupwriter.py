"""Group commit for `engine serve`: one thread runs every write transaction of the server.

Why: a durable LMDB commit costs two device flushes (~0.6 ms here) whatever it holds. The thread
takes every write queued while the previous commit was flushing and commits them together, so N
concurrent requests cost one commit, not N, and the event loop keeps parsing HTTP meanwhile. LMDB
serialises writers (also across processes) and `LocalStore.append` takes the next offset inside the
transaction, so offsets stay contiguous from 0 per stream. A write that fails does not fail its
neighbours: a failed group is retried one write per transaction.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any

from .errors import EngineError
from .local import LocalStore

__all__ = ["APPEND", "DELETE", "MAX_GROUP", "PUT", "GroupWriter"]

PUT, DELETE, APPEND = 0, 1, 2
MAX_GROUP = 512
"""Writes committed together at most."""


class GroupWriter:
    """The thread that runs every write transaction, committing queued writes together."""

    def __init__(self, store: LocalStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[int, str, bytes, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="reddb-writer", daemon=True)
        self._thread.start()

    def submit(self, op: int, name: str, value: bytes) -> asyncio.Future[Any]:
        """Queue one write; the future resolves after its transaction committed."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self._closed:
            fut.set_exception(EngineError("the server is shutting down"))
        else:
            self._queue.put((op, name, value, fut))
        return fut

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        late = []  # submitted while we were closing: fail them rather than leave them hanging
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                late.append(item)
        if late:
            error = EngineError("the server is shutting down")
            try:
                self._loop.call_soon_threadsafe(_deliver, late, [error] * len(late))
            except RuntimeError:
                pass

    def _run(self) -> None:
        q = self._queue
        stop = False
        while not stop:
            first = q.get()
            if first is None:
                break
            items = [first]
            while len(items) < MAX_GROUP:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                items.append(item)
            results = self._commit(items)
            try:
                self._loop.call_soon_threadsafe(_deliver, items, results)
            except RuntimeError:  # the loop is gone: nobody is waiting any more
                pass

    def _commit(self, items: list[tuple[int, str, bytes, asyncio.Future[Any]]]) -> list[Any]:
        try:
            with self._store.write() as batch:
                return [self._apply(batch, op, name, value) for op, name, value, _ in items]
        except Exception as exc:
            if len(items) == 1:
                return [exc]
        # one bad write must not fail its neighbours: retry each in its own transaction
        out: list[Any] = []
        for op, name, value, _ in items:
            try:
                with self._store.write() as batch:
                    out.append(self._apply(batch, op, name, value))
            except Exception as exc:
                out.append(exc)
        return out

    def _apply(self, batch: Any, op: int, name: str, value: bytes) -> int | None:
        if op == APPEND:
            return self._store.append(batch, name, value)
        if op == PUT:
            self._store.kv_put(batch, name, value)
        else:
            self._store.kv_delete(batch, name)
        return None


def _deliver(items: list[tuple[int, str, bytes, asyncio.Future[Any]]], results: list[Any]) -> None:
    for (_, _, _, fut), res in zip(items, results, strict=True):
        if fut.done():  # cancelled: the write still committed, nobody is waiting
            continue
        if isinstance(res, BaseException):
            fut.set_exception(res)
        else:
            fut.set_result(res)
