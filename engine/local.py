"""The LMDB local tier: one environment per store directory, shared by processes.

Sub-databases:
  kv       key (UTF-8)                      -> value bytes (JSON, or a binary embedding record)
  streams  stream id (u32 BE) + offset (u64 BE) -> row bytes
  smeta    stream name (UTF-8)              -> stream id (u32 BE) + next offset (u64 BE)
  ids      record id (UTF-8)                -> stream id (u32 BE) + offset (u64 BE)
  meta     engine bookkeeping (counters, schema version, ...)
  outbox   sequence (u64 BE)                -> replication entry (see `encode_outbox`)

Why this shape: LMDB serialises write transactions across every process that
maps the file, so reading `next offset` inside the write transaction makes
offsets contiguous per stream with any number of writers, and one commit holds
a record, its offset bump, its id-index entry and its outbox entry together:
a crash can never separate them. Keys are big-endian so a cursor walks a
stream in offset order. The map is large and sparse (1 TiB on 64-bit) so it
never needs resizing in normal use.

Durability: `durable=True` (default) fsyncs every commit, so an acknowledged
write survives power loss. `durable=False` skips the fsync: every committed
write survives a crash of the process (the data is in the OS page cache), but
an OS crash or power loss may lose the last commits.
"""

from __future__ import annotations

import itertools
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from .errors import (
    ClosedStoreError,
    ForkedStoreError,
    ReadersFullError,
    StorageError,
    StorageFullError,
)

_LOC = struct.Struct(">IQ")  # stream id, offset
R = TypeVar("R")
_U64 = struct.Struct(">Q")
_OUTBOX_HEAD = struct.Struct(">cHH")  # op, name length, record id length

OP_APPEND = b"A"
OP_PUT = b"P"
OP_DELETE = b"D"

_fork_epoch = 0


def _after_fork_in_child() -> None:
    global _fork_epoch
    _fork_epoch += 1
    _ENVS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# one lmdb.Environment per directory per process (LMDB forbids opening one twice)
_ENVS: dict[str, list[Any]] = {}  # realpath -> [env, refcount, thread-local open batch]
_ENVS_LOCK = threading.Lock()


def _map_error(exc: lmdb.Error) -> StorageError:
    if isinstance(exc, lmdb.MapFullError):
        return StorageFullError(f"the LMDB map is full: {exc}")
    if isinstance(exc, lmdb.ReadersFullError):
        return ReadersFullError(f"no free LMDB reader slot: {exc}")
    if isinstance(exc, lmdb.DiskError):
        return StorageError(f"disk error: {exc}", hint="check free disk space and the file system")
    return StorageError(f"LMDB error: {exc}")


def encode_outbox(op: bytes, name: str, record_id: str | None, payload: bytes) -> bytes:
    """Outbox entry: op (A/P/D), name, optional record id, then the JSON payload sent to RedDB."""
    n = name.encode()
    r = (record_id or "").encode()
    return _OUTBOX_HEAD.pack(op, len(n), len(r)) + n + r + payload


def decode_outbox(data: bytes | memoryview) -> tuple[bytes, str, str | None, bytes]:
    """Inverse of `encode_outbox`: (op, name, record id or None, payload)."""
    op, nlen, rlen = _OUTBOX_HEAD.unpack_from(data, 0)
    pos = _OUTBOX_HEAD.size
    name = bytes(data[pos : pos + nlen]).decode()
    pos += nlen
    rid = bytes(data[pos : pos + rlen]).decode() if rlen else None
    pos += rlen
    return op, name, rid, bytes(data[pos:])


class WriteBatch:
    """The state of one write transaction: stream heads and outbox sequence cached until commit."""

    __slots__ = ("after_commit", "heads", "outbox_seq", "spaces", "txn")

    def __init__(self, txn: lmdb.Transaction) -> None:
        self.txn = txn
        self.heads: dict[bytes, list[int]] = {}  # stream name -> [stream id, next offset]
        self.spaces: set[bytes] = set()  # key spaces written: their generation is bumped at commit
        self.outbox_seq: int | None = None
        self.after_commit: list[Callable[[], None]] = []


class LocalStore:
    """The LMDB tier of one store directory. Thread-safe; one per process per directory is typical."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        map_size: int = 1 << 40,
        max_readers: int = 1024,
        outbox: bool = False,
    ) -> None:
        self.path = str(Path(path).expanduser().resolve())
        self.durable = durable
        self.outbox_enabled = outbox
        self._pid_epoch = _fork_epoch
        self._closed = False
        created = not os.path.exists(self.path)
        old_umask = os.umask(0o077)
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            if created:
                os.chmod(self.path, 0o700)
            with _ENVS_LOCK:
                entry = _ENVS.get(self.path)
                if entry is None:
                    env = lmdb.open(
                        self.path,
                        map_size=map_size,
                        max_dbs=16,
                        max_readers=max_readers,
                        sync=durable,
                        metasync=durable,
                        readahead=False,
                        lock=True,
                        subdir=True,
                        mode=0o600,
                    )
                    env.reader_check()
                    entry = [env, 0, threading.local()]
                    _ENVS[self.path] = entry
                entry[1] += 1
        except lmdb.Error as exc:
            raise _map_error(exc) from exc
        finally:
            os.umask(old_umask)
        self.env: lmdb.Environment = entry[0]
        # shared by every handle on this environment: a second write transaction on the same
        # thread would deadlock, so nested writes through any handle join the open one
        self._tls = entry[2]
        self._stream_names: dict[int, str] = {}  # stream id -> name, for the id index
        try:
            self.db_kv = self.env.open_db(b"kv")
            self.db_streams = self.env.open_db(b"streams")
            self.db_smeta = self.env.open_db(b"smeta")
            self.db_ids = self.env.open_db(b"ids")
            self.db_meta = self.env.open_db(b"meta")
            self.db_outbox = self.env.open_db(b"outbox")
        except lmdb.Error as exc:
            raise _map_error(exc) from exc

    # ------------------------------------------------------------------ lifecycle
    def _check(self) -> None:
        if self._pid_epoch != _fork_epoch:
            raise ForkedStoreError(
                f"the store at {self.path} was opened before fork(); it cannot be used here"
            )
        if self._closed:
            raise ClosedStoreError(f"the store at {self.path} is closed")

    def close(self) -> None:
        """Release this handle; the environment closes when its last handle in the process does."""
        if self._closed or self._pid_epoch != _fork_epoch:
            self._closed = True
            return
        self._closed = True
        with _ENVS_LOCK:
            entry = _ENVS.get(self.path)
            if entry is not None and entry[0] is self.env:
                entry[1] -= 1
                if entry[1] <= 0:
                    del _ENVS[self.path]
                    self.env.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def last_txn_id(self) -> int:
        """LMDB's last committed transaction id: changes whenever any process commits a write."""
        self._check()
        return int(self.env.info()["last_txnid"])

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def write(self) -> Iterator[WriteBatch]:
        """One write transaction; nested calls on the same thread join the outer one (all or nothing)."""
        self._check()
        current: WriteBatch | None = getattr(self._tls, "batch", None)
        if current is not None:
            yield current
            return
        try:
            txn = self.env.begin(write=True)
        except lmdb.Error as exc:
            raise _map_error(exc) from exc
        batch = WriteBatch(txn)
        self._tls.batch = batch
        try:
            yield batch
            self._flush_heads(batch)
            txn.commit()
        except lmdb.Error as exc:
            txn.abort()
            raise _map_error(exc) from exc
        except BaseException:
            txn.abort()
            raise
        finally:
            self._tls.batch = None
        for hook in batch.after_commit:
            hook()

    @contextmanager
    def read_txn(self) -> Iterator[lmdb.Transaction]:
        """A read transaction with zero-copy buffers (valid only inside the block)."""
        self._check()
        current: WriteBatch | None = getattr(self._tls, "batch", None)
        if current is not None:  # read your own writes inside a batch
            yield current.txn
            return
        try:
            txn = self.env.begin(buffers=True)
        except lmdb.Error as exc:
            raise _map_error(exc) from exc
        try:
            yield txn
        finally:
            txn.abort()

    def _flush_heads(self, batch: WriteBatch) -> None:
        txn = batch.txn
        for name, (sid, nxt) in batch.heads.items():
            txn.put(name, _LOC.pack(sid, nxt), db=self.db_smeta)
        if batch.outbox_seq is not None:
            txn.put(b"outbox_seq", _U64.pack(batch.outbox_seq), db=self.db_meta)
        for space in batch.spaces:
            gkey = b"gen:" + space
            raw = txn.get(gkey, db=self.db_meta)
            txn.put(gkey, _U64.pack((_U64.unpack(raw)[0] if raw is not None else 0) + 1), db=self.db_meta)

    # ------------------------------------------------------------------ key-value
    def kv_put(
        self, batch: WriteBatch, key: str, value: bytes, *, wire: bytes | None = None, replicate: bool = True
    ) -> None:
        """Store `value` under `key`; `wire` is what RedDB gets (defaults to `value`)."""
        kb = key.encode()
        batch.txn.put(kb, value, db=self.db_kv)
        batch.spaces.add(kb.rpartition(b":")[0])
        if self.outbox_enabled and replicate:
            self._outbox_add(batch, OP_PUT, key, None, value if wire is None else wire)

    def kv_delete(self, batch: WriteBatch, key: str, *, replicate: bool = True) -> bool:
        """Delete `key`; True if it existed. Replicated as a delete either way (idempotent remotely)."""
        kb = key.encode()
        existed = bool(batch.txn.delete(kb, db=self.db_kv))
        batch.spaces.add(kb.rpartition(b":")[0])
        if self.outbox_enabled and replicate:
            self._outbox_add(batch, OP_DELETE, key, None, b"")
        return existed

    def kv_get(self, key: str) -> bytes | None:
        """The stored bytes for `key`, or None."""
        with self.read_txn() as txn:
            buf = txn.get(key.encode(), db=self.db_kv)
            return None if buf is None else bytes(buf)

    def kv_get_with(self, key: str, fn: Callable[[Any], Any]) -> Any:
        """Apply `fn` to the zero-copy value buffer of `key` inside the read transaction; None if missing."""
        with self.read_txn() as txn:
            buf = txn.get(key.encode(), db=self.db_kv)
            return None if buf is None else fn(buf)

    def kv_scan(self, prefix: str) -> list[tuple[str, bytes]]:
        """All (key, value) pairs whose key starts with `prefix`, in key order."""
        p = prefix.encode()
        out: list[tuple[str, bytes]] = []
        with self.read_txn() as txn:
            cur = txn.cursor(db=self.db_kv)
            if cur.set_range(p):
                for k, v in cur:
                    kb = bytes(k)
                    if not kb.startswith(p):
                        break
                    out.append((kb.decode(), bytes(v)))
        return out

    def space_generation(self, space: str) -> int:
        """How many committed transactions wrote a key of `space` (the key up to its last ':')."""
        raw = self.meta_get("gen:" + space)
        return 0 if raw is None else int(_U64.unpack(raw)[0])

    # ------------------------------------------------------------------ streams
    def _head(self, batch: WriteBatch, name: bytes) -> list[int]:
        head = batch.heads.get(name)
        if head is None:
            raw = batch.txn.get(name, db=self.db_smeta)
            if raw is None:
                nid_raw = batch.txn.get(b"next_stream_id", db=self.db_meta)
                sid = _U64.unpack(nid_raw)[0] if nid_raw is not None else 1
                batch.txn.put(b"next_stream_id", _U64.pack(sid + 1), db=self.db_meta)
                head = [sid, 0]
            else:
                sid, nxt = _LOC.unpack(raw)
                head = [sid, nxt]
            batch.heads[name] = head
        return head

    def append(
        self,
        batch: WriteBatch,
        stream: str,
        row: bytes,
        *,
        record_id: str | None = None,
        replicate: bool = True,
    ) -> int:
        """Append `row` to `stream`; returns its offset (contiguous from 0 per stream)."""
        head = self._head(batch, stream.encode())
        sid, off = head
        loc = _LOC.pack(sid, off)
        txn = batch.txn
        txn.put(loc, row, db=self.db_streams)
        if record_id is not None:
            txn.put(record_id.encode(), loc, db=self.db_ids)
        head[1] = off + 1
        if self.outbox_enabled and replicate:
            self._outbox_add(batch, OP_APPEND, stream, record_id, row)
        return off

    def _stream_head(self, txn: lmdb.Transaction, stream: str) -> tuple[int, int] | None:
        current: WriteBatch | None = getattr(self._tls, "batch", None)
        if current is not None and current.txn is txn:
            head = current.heads.get(stream.encode())
            if head is not None:
                return head[0], head[1]
        raw = txn.get(stream.encode(), db=self.db_smeta)
        if raw is None:
            return None
        sid, nxt = _LOC.unpack(raw)
        return sid, nxt

    def stream_length(self, stream: str) -> int:
        """Number of rows in `stream` (= its next offset); also its generation for caches."""
        with self.read_txn() as txn:
            head = self._stream_head(txn, stream)
            return 0 if head is None else head[1]

    def stream_lengths(self) -> dict[str, int]:
        """Every stream's length."""
        out: dict[str, int] = {}
        with self.read_txn() as txn:
            for k, v in txn.cursor(db=self.db_smeta):
                out[bytes(k).decode()] = _LOC.unpack(v)[1]
        return out

    def read(self, stream: str, start: int = 0, count: int = 100) -> list[tuple[int, bytes]]:
        """Rows with offset >= start, ascending, at most `count`."""
        return self.read_with(stream, start, count, bytes)

    def read_with(
        self, stream: str, start: int, count: int, fn: Callable[[Any], Any]
    ) -> list[tuple[int, Any]]:
        """Like `read`, applying `fn` to each zero-copy row buffer inside the transaction."""
        if count <= 0:
            return []
        with self.read_txn() as txn:
            return self._rows(txn, stream, max(0, start), count, fn, tail=False)

    def _rows(
        self,
        txn: lmdb.Transaction,
        stream: str,
        start: int,
        count: int,
        fn: Callable[[Any], Any],
        *,
        tail: bool,
    ) -> list[tuple[int, Any]]:
        found = self._cursor_at(txn, stream, start, count, tail=tail)
        if found is None:
            return []
        cur, start, n = found
        out: list[tuple[int, Any]] = []
        for off in range(start, start + n):
            out.append((off, fn(cur.value())))
            if not cur.next():
                break
        return out

    def _cursor_at(
        self, txn: lmdb.Transaction, stream: str, start: int, count: int, *, tail: bool = False
    ) -> tuple[Any, int, int] | None:
        """A cursor on row `start` of `stream` (with `tail`: on the first of its newest `count`
        rows), that row's offset, and how many rows from there (at most `count`) are the stream's;
        None when there is no such row."""
        head = self._stream_head(txn, stream)
        if head is None:
            return None
        sid, nxt = head
        if tail:
            start = max(0, nxt - count)
        if start < 0 or start >= nxt:
            return None
        cur = txn.cursor(db=self.db_streams)
        if not cur.set_key(_LOC.pack(sid, start)):
            return None
        return cur, start, min(count, nxt - start)

    def read_at(
        self, stream: str, offsets: Sequence[int], fn: Callable[[Any], Any], *, gap: int = 8
    ) -> dict[int, Any]:
        """{offset: fn(row buffer)} for `offsets` (ascending, distinct; those outside the stream are
        left out), in one read transaction. The cursor steps to an offset at most `gap` rows ahead
        and seeks to a farther one; `fn` runs only on the wanted rows."""
        out: dict[int, Any] = {}
        if not offsets:
            return out
        with self.read_txn() as txn:
            head = self._stream_head(txn, stream)
            if head is None:
                return out
            sid, nxt = head
            cur = txn.cursor(db=self.db_streams)
            pos = -1 - gap  # the offset the cursor is on (none yet)
            for off in offsets:
                if off >= nxt:
                    break
                if off < 0:
                    continue
                if 0 < off - pos <= gap:
                    while pos < off and cur.next():
                        pos += 1
                    if pos < off:
                        break
                elif not cur.set_key(_LOC.pack(sid, off)):
                    pos = -1 - gap
                    continue
                pos = off
                out[off] = fn(cur.value())
        return out

    def scan_rows(self, stream: str, start: int, count: int, consume: Callable[[Any, int], R]) -> R | None:
        """`consume(cursor, n)` in one read transaction, the lmdb cursor on row `start` of `stream`
        and n = how many rows from there (at most `count`) belong to the stream; None when there is
        no such row. For bulk decoders (engine._rowdecode) that step the cursor themselves; the
        cursor is valid only inside `consume`."""
        if count <= 0:
            return None
        with self.read_txn() as txn:
            found = self._cursor_at(txn, stream, start, count)
            return None if found is None else consume(found[0], found[2])

    def read_tail(self, stream: str, count: int, fn: Callable[[Any], Any]) -> list[tuple[int, Any]]:
        """The newest `count` rows, ascending, with `fn` applied, in one read transaction."""
        if count <= 0:
            return []
        with self.read_txn() as txn:
            return self._rows(txn, stream, 0, count, fn, tail=True)

    def iter_backward(
        self, stream: str, fn: Callable[[Any], Any], *, before: int | None = None, page: int = 256
    ) -> Iterator[tuple[int, Any]]:
        """Newest-first iteration over `stream`, in read transactions of `page` rows each."""
        end = self.stream_length(stream) if before is None else before
        while end > 0:
            start = max(0, end - page)
            rows = self.read_with(stream, start, end - start, fn)
            yield from reversed(rows)
            end = start

    def locate(self, record_id: str) -> tuple[str, int] | None:
        """(stream name, offset) of a record id from the id index, or None."""
        with self.read_txn() as txn:
            raw = txn.get(record_id.encode(), db=self.db_ids)
            if raw is None:
                return None
            sid, off = _LOC.unpack(raw)
            name = self._stream_names.get(sid)
            if name is None:  # stream ids are never reassigned: learn the whole map once per new id
                for k, v in txn.cursor(db=self.db_smeta):
                    self._stream_names[_LOC.unpack(v)[0]] = bytes(k).decode()
                name = self._stream_names.get(sid)
        return None if name is None else (name, off)

    def get_row(self, stream: str, offset: int) -> bytes | None:
        """One row by offset, or None."""
        rows = self.read(stream, offset, 1)
        return rows[0][1] if rows and rows[0][0] == offset else None

    # ------------------------------------------------------------------ meta and outbox
    def meta_get(self, key: str) -> bytes | None:
        with self.read_txn() as txn:
            raw = txn.get(key.encode(), db=self.db_meta)
            return None if raw is None else bytes(raw)

    def meta_put(self, batch: WriteBatch, key: str, value: bytes) -> None:
        batch.txn.put(key.encode(), value, db=self.db_meta)

    def _outbox_add(self, batch: WriteBatch, op: bytes, name: str, rid: str | None, payload: bytes) -> None:
        if batch.outbox_seq is None:
            raw = batch.txn.get(b"outbox_seq", db=self.db_meta)
            batch.outbox_seq = _U64.unpack(raw)[0] if raw is not None else 0
        batch.txn.put(_U64.pack(batch.outbox_seq), encode_outbox(op, name, rid, payload), db=self.db_outbox)
        batch.outbox_seq += 1

    def outbox_size(self) -> int:
        """Entries waiting to be replicated."""
        with self.read_txn() as txn:
            return int(txn.stat(self.db_outbox)["entries"])

    def outbox_entries(
        self, txn: lmdb.Transaction
    ) -> Iterator[tuple[int, tuple[bytes, str, str | None, bytes]]]:
        """(sequence, decoded entry) for every outbox entry, oldest first, inside `txn`."""
        for k, v in txn.cursor(db=self.db_outbox):
            yield _U64.unpack(k)[0], decode_outbox(v)

    def outbox_bounds(self, txn: lmdb.Transaction) -> tuple[int | None, int]:
        """(oldest pending sequence or None, next sequence to be assigned), inside `txn`."""
        cur = txn.cursor(db=self.db_outbox)
        oldest = _U64.unpack(cur.key())[0] if cur.first() else None
        raw = txn.get(b"outbox_seq", db=self.db_meta)
        return oldest, (_U64.unpack(raw)[0] if raw is not None else 0)

    def outbox_delete(self, batch: WriteBatch, seqs: Iterable[int]) -> None:
        """Drop delivered outbox entries inside `batch`."""
        delete = batch.txn.delete
        for s in seqs:
            delete(_U64.pack(s), db=self.db_outbox)

    def outbox_peek(self, limit: int = 1000) -> list[tuple[int, tuple[bytes, str, str | None, bytes]]]:
        """The oldest `limit` outbox entries as (sequence, decoded entry)."""
        with self.read_txn() as txn:
            return list(itertools.islice(self.outbox_entries(txn), limit))

    def outbox_remove(self, seqs: list[int]) -> None:
        """Drop delivered outbox entries (one transaction)."""
        with self.write() as batch:
            self.outbox_delete(batch, seqs)

    # ------------------------------------------------------------------ info
    def info(self) -> dict[str, Any]:
        """LMDB health: map size and use, readers, page counts, per-database entries."""
        self._check()
        info = self.env.info()
        stat = self.env.stat()
        used = (info["last_pgno"] + 1) * stat["psize"]
        dbs = {}
        with self.read_txn() as txn:
            for name, db in (
                ("kv", self.db_kv),
                ("streams", self.db_streams),
                ("smeta", self.db_smeta),
                ("ids", self.db_ids),
                ("meta", self.db_meta),
                ("outbox", self.db_outbox),
            ):
                s = txn.stat(db)
                dbs[name] = {
                    "entries": s["entries"],
                    "pages": s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"],
                }
        return {
            "path": self.path,
            "map_size": info["map_size"],
            "map_used": used,
            "map_used_pct": round(100.0 * used / info["map_size"], 6),
            "page_size": stat["psize"],
            "last_txnid": info["last_txnid"],
            "max_readers": info["max_readers"],
            "num_readers": info["num_readers"],
            "durable": self.durable,
            "databases": dbs,
        }
