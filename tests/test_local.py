"""The LMDB tier: offsets, batches, id index, outbox, permissions, fork safety, errors."""

from __future__ import annotations

import os
import stat

import lmdb
import pytest

from engine.errors import ClosedStoreError, ForkedStoreError, StorageFullError
from engine.local import OP_APPEND, OP_DELETE, OP_PUT, LocalStore, decode_outbox, encode_outbox


@pytest.fixture
def store(tmp_path):
    s = LocalStore(tmp_path / "db")
    yield s
    s.close()


def test_offsets_start_at_zero_and_are_contiguous_per_stream(store):
    with store.write() as b:
        assert [store.append(b, "a", b"%d" % i) for i in range(3)] == [0, 1, 2]
        assert store.append(b, "b", b"x") == 0
    with store.write() as b:
        assert store.append(b, "a", b"3") == 3
    assert store.read("a") == [(0, b"0"), (1, b"1"), (2, b"2"), (3, b"3")]
    assert store.read("a", 2, 1) == [(2, b"2")]
    assert store.read("a", -5, 2) == [(0, b"0"), (1, b"1")]
    assert store.read("a", 10) == []
    assert store.read("a", 0, 0) == []
    assert store.read("missing") == []
    assert store.stream_length("a") == 4
    assert store.stream_lengths() == {"a": 4, "b": 1}


def test_streams_do_not_bleed_into_each_other(store):
    with store.write() as b:
        for _i in range(5):
            store.append(b, "s1", b"1")
            store.append(b, "s2", b"2")
    assert {v for _, v in store.read("s1", 0, 100)} == {b"1"}
    assert {v for _, v in store.read("s2", 0, 100)} == {b"2"}


def test_failed_batch_writes_nothing(store):
    with store.write() as b:
        store.append(b, "a", b"keep")
    before = store.info()["databases"]
    with pytest.raises(RuntimeError), store.write() as b:
        store.append(b, "a", b"lost")
        store.kv_put(b, "k", b"1")
        raise RuntimeError("boom")
    assert store.read("a") == [(0, b"keep")]
    assert store.kv_get("k") is None
    assert store.info()["databases"] == before
    with store.write() as b:
        assert store.append(b, "a", b"next") == 1


def test_nested_writes_join_the_outer_transaction(store):
    with pytest.raises(ValueError), store.write() as outer:
        store.append(outer, "a", b"1")
        with store.write() as inner:
            assert inner is outer
            store.append(inner, "a", b"2")
        raise ValueError
    assert store.stream_length("a") == 0


def test_reads_inside_a_batch_see_its_writes(store):
    with store.write() as b:
        store.append(b, "a", b"1")
        assert store.stream_length("a") == 1
        assert store.read("a") == [(0, b"1")]


def test_id_index_locates_records(store):
    with store.write() as b:
        store.append(b, "x", b"0")
        store.append(b, "y", b"r", record_id="rec-1")
    assert store.locate("rec-1") == ("y", 0)
    assert store.locate("nope") is None
    assert store.get_row("y", 0) == b"r"
    assert store.get_row("y", 1) is None


def test_kv_put_get_delete_scan(store):
    with store.write() as b:
        store.kv_put(b, "p:a:1", b"1")
        store.kv_put(b, "p:a:2", b"2")
        store.kv_put(b, "p:b:1", b"3")
    assert store.kv_get("p:a:1") == b"1"
    assert store.kv_scan("p:a:") == [("p:a:1", b"1"), ("p:a:2", b"2")]
    with store.write() as b:
        assert store.kv_delete(b, "p:a:1") is True
        assert store.kv_delete(b, "p:a:1") is False
    assert store.kv_get("p:a:1") is None


def test_iter_backward_is_newest_first(store):
    with store.write() as b:
        for i in range(10):
            store.append(b, "a", b"%d" % i)
    assert [o for o, _ in store.iter_backward("a", bytes, page=3)] == list(range(9, -1, -1))
    assert [o for o, _ in store.iter_backward("a", bytes, before=4, page=3)] == [3, 2, 1, 0]


def test_outbox_is_written_in_the_same_transaction(tmp_path):
    s = LocalStore(tmp_path / "o", outbox=True)
    with s.write() as b:
        s.append(b, "st", b'{"a":1}', record_id="r1")
        s.kv_put(b, "k", b"local", wire=b'"wire"')
        s.kv_delete(b, "k")
        s.append(b, "internal", b"x", replicate=False)
    entries = s.outbox_peek()
    assert [seq for seq, _ in entries] == [0, 1, 2]
    assert [e for _, e in entries] == [
        (OP_APPEND, "st", "r1", b'{"a":1}'),
        (OP_PUT, "k", None, b'"wire"'),
        (OP_DELETE, "k", None, b""),
    ]
    with pytest.raises(KeyError), s.write() as b:
        s.append(b, "st", b"2")
        raise KeyError
    assert s.outbox_size() == 3
    s.outbox_remove([0, 1])
    assert [seq for seq, _ in s.outbox_peek()] == [2]
    with s.write() as b:
        s.append(b, "st", b"3")
    assert [seq for seq, _ in s.outbox_peek()] == [2, 3]
    s.close()


def test_outbox_entry_round_trip():
    raw = encode_outbox(OP_APPEND, "strëam", "id-é", b'{"x": [1]}')
    assert decode_outbox(raw) == (OP_APPEND, "strëam", "id-é", b'{"x": [1]}')
    assert decode_outbox(encode_outbox(OP_PUT, "k", None, b"")) == (OP_PUT, "k", None, b"")


def test_files_are_private(tmp_path):
    s = LocalStore(tmp_path / "priv")
    with s.write() as b:
        s.append(b, "a", b"1")
    assert stat.S_IMODE(os.stat(tmp_path / "priv").st_mode) == 0o700
    for name in ("data.mdb", "lock.mdb"):
        assert stat.S_IMODE(os.stat(tmp_path / "priv" / name).st_mode) == 0o600
    s.close()


def test_one_environment_per_directory_per_process(tmp_path):
    a = LocalStore(tmp_path / "same")
    b = LocalStore(str(tmp_path / "same") + "/")
    assert a.env is b.env
    with a.write() as wb:
        a.append(wb, "s", b"1")
        with b.write() as wb2:  # joins: no self-deadlock across handles
            b.append(wb2, "s", b"2")
    assert b.read("s") == [(0, b"1"), (1, b"2")]
    a.close()
    assert b.read("s")[0] == (0, b"1")
    b.close()
    with pytest.raises(ClosedStoreError):
        b.read("s")


def test_map_full_becomes_storage_full_error_and_keeps_data(tmp_path):
    s = LocalStore(tmp_path / "small", map_size=1 << 20)
    with s.write() as b:
        s.append(b, "a", b"first")
    with pytest.raises(StorageFullError) as info, s.write() as b:
        for _ in range(1000):
            s.append(b, "a", os.urandom(4096))
    assert "map_size" in str(info.value)
    assert s.read("a") == [(0, b"first")]
    s.close()


def test_use_after_fork_raises_in_the_child(tmp_path):
    s = LocalStore(tmp_path / "f")
    with s.write() as b:
        s.append(b, "a", b"1")
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            s.read("a")
        except ForkedStoreError:
            code = 0
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert s.read("a") == [(0, b"1")]  # the parent is unaffected
    s.close()


def test_non_durable_mode_opens_without_sync(tmp_path):
    s = LocalStore(tmp_path / "nd", durable=False)
    assert s.info()["durable"] is False
    with s.write() as b:
        s.append(b, "a", b"1")
    s.close()
    env = lmdb.open(str(tmp_path / "nd"), max_dbs=16, readonly=True)
    with env.begin() as txn:
        assert txn.get(b"streams") is not None  # the named databases exist
    env.close()


def test_key_space_generations_count_committed_writes(store):
    assert store.space_generation("p:sig") == 0
    with store.write() as b:
        store.kv_put(b, "p:sig:a", b"1")
        store.kv_put(b, "p:sig:b", b"1")
    assert store.space_generation("p:sig") == 1
    with store.write() as b:
        store.kv_delete(b, "p:sig:a")
        store.kv_put(b, "p:ver:a", b"1")
    assert store.space_generation("p:sig") == 2
    assert store.space_generation("p:ver") == 1
    with pytest.raises(ValueError), store.write() as b:
        store.kv_put(b, "p:sig:c", b"1")
        raise ValueError
    assert store.space_generation("p:sig") == 2


def test_read_at_steps_to_near_offsets_and_seeks_to_far_ones(store):
    with store.write() as b:
        for i in range(300):
            store.append(b, "s", b"%d" % i)
        store.append(b, "t", b"other stream")  # right after s in key order: never read as s
    calls: list[bytes] = []

    def fn(buf):
        calls.append(bytes(buf))
        return int(bytes(buf))

    offsets = [-1, 0, 1, 5, 13, 14, 150, 299, 300, 1000]
    got = store.read_at("s", offsets, fn, gap=8)
    assert got == {0: 0, 1: 1, 5: 5, 13: 13, 14: 14, 150: 150, 299: 299}
    assert sorted(calls) == sorted(b"%d" % o for o in got)  # fn runs on the wanted rows only
    for gap in (0, 1, 1000):  # stepping everywhere or seeking everywhere: the same rows
        assert store.read_at("s", offsets, fn, gap=gap) == got
    assert store.read_at("s", [], fn) == {} and store.read_at("nothing", [0], fn) == {}
    assert store.read_at("t", [0, 1], fn=bytes) == {0: b"other stream"}
