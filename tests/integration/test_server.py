"""`engine serve` against the RedDB protocol, over real HTTP to a real subprocess on loopback.

Statuses and bodies are those of the reference Rust server (shared/old-system.md b.1); most tests
share two module-wide servers (auth off / auth on) and keep out of each other's way with their own
namespaces.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson
import pytest

from engine.errors import ConfigError
from engine.local import LocalStore
from engine.server import storage_name
from tests.integration.conftest import REPO_ROOT, RedDBServerProcess

MAX_BODY = 64 * 1024  # the shared server's body limit, small so that 413 is cheap to provoke
NOT_FOUND = {"ok": False, "error": "not found"}
UNAUTHORIZED = {"ok": False, "error": "unauthorized"}
TOKEN = "tok-" + secrets.token_urlsafe(24)


def enc(segment: str) -> str:
    """Percent-encode one path segment completely, dots included (httpx would resolve `.`/`..`)."""
    return quote(segment, safe="").replace(".", "%2E")


def kv(ns: str, key: str) -> str:
    return f"/api/kv/{enc(ns)}/{enc(key)}"


def stream(ns: str, name: str, action: str) -> str:
    return f"/api/streams/{enc(ns)}/{enc(name)}/{action}"


JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedDBServerProcess]:
    base = tmp_path_factory.mktemp("open")
    # no fsync: these tests are about the protocol (durability is test_data_survives_...)
    args = ["--max-body-bytes", str(MAX_BODY)]
    proc = RedDBServerProcess(base / "data", durable=False, log_dir=base, extra_args=args)
    with proc:
        yield proc


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedDBServerProcess]:
    base = tmp_path_factory.mktemp("auth")
    proc = RedDBServerProcess(
        base / "data", token=TOKEN, log_dir=base, extra_args=["--log-level", "debug", "--access-log"]
    )
    with proc:
        yield proc


@pytest.fixture(scope="module")
def http(server: RedDBServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def anon(auth_server: RedDBServerProcess) -> Iterator[httpx.Client]:
    """A client of the auth server that sends no token."""
    with auth_server.client(headers={}) as client:
        yield client


@pytest.fixture(scope="module")
def admin(auth_server: RedDBServerProcess) -> Iterator[httpx.Client]:
    with auth_server.client() as client:
        yield client


# ---------------------------------------------------------------------- health and routing
@pytest.mark.parametrize("path", ["/health", "/api/health"])
def test_health_answers_without_token(
    path: str, http: httpx.Client, anon: httpx.Client, server: RedDBServerProcess
) -> None:
    for client, auth in ((http, False), (anon, True)):
        r = client.get(path)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert set(body) == {"ok", "service", "version", "timestamp", "data_dir", "auth_enabled"}
        assert body["ok"] is True and body["service"] == "reddb" and body["version"] == "1.0.0"
        assert isinstance(body["timestamp"], float) and body["timestamp"] > 1.7e9
        assert body["auth_enabled"] is auth
    assert http.get(path).json()["data_dir"] == str(server.data_dir.resolve())
    assert http.head(path).status_code == 200
    assert http.post(path).status_code == 405


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/nope", 404),
        ("GET", "/health/", 404),
        ("GET", "/api/kv/ns", 404),
        ("GET", "/api/kv/ns/", 404),
        ("GET", "/api/kv//key", 404),
        ("GET", "/api/kv/ns/a/b", 404),  # a raw `/` never reaches a key
        ("GET", "/api/streams/ns/s", 404),
        ("GET", "/api/streams/ns/s/tail", 404),
        ("GET", "/api/signatures", 404),
        ("POST", "/api/kv/ns/k", 405),
        ("PATCH", "/api/kv/ns/k", 405),
        ("GET", "/api/streams/ns/s/append", 405),
        ("PUT", "/api/streams/ns/s/append", 405),
        ("POST", "/api/streams/ns/s/read", 405),
    ],
)
def test_unknown_path_404_and_wrong_method_405_with_empty_body(
    method: str, path: str, status: int, http: httpx.Client, anon: httpx.Client
) -> None:
    for client in (http, anon):  # routing comes before auth
        r = client.request(method, path, content=b"{}", headers=JSON)
        assert r.status_code == status
        assert r.content == b""
        if status == 405:
            assert r.headers["allow"]


# ---------------------------------------------------------------------- key-value
def test_kv_put_get_upsert_delete(http: httpx.Client) -> None:
    url = kv("kvns", "k1")
    assert http.get(url).status_code == 404
    assert http.get(url).json() == NOT_FOUND
    r = http.put(url, content=b'{"a": 1, "b": [true, null]}', headers=JSON)
    assert r.status_code == 200
    assert r.json() == {"ok": True, "namespace": "kvns", "key": "k1"}
    r = http.get(url)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.content == b'{"a": 1, "b": [true, null]}'  # verbatim
    assert http.put(url, content=b"2", headers=JSON).status_code == 200  # upsert: last write wins
    assert http.get(url).content == b"2"
    assert http.get(kv("other", "k1")).status_code == 404  # namespaces are separate
    for _ in range(2):  # idempotent
        r = http.delete(url)
        assert r.status_code == 200
        assert r.json() == {"ok": True, "namespace": "kvns", "key": "k1"}
        assert http.get(url).json() == NOT_FOUND


@pytest.mark.parametrize(
    "value",
    [b"null", b"0", b"-1.5e3", b'"text"', b'"cl\xc3\xa9 \\u00e9 \\n"', b"[]", b"{}", b'[1,"2",{"3":[4]}]'],
)
def test_any_json_value_round_trips_verbatim(value: bytes, http: httpx.Client) -> None:
    url = kv("values", value.decode())
    assert http.put(url, content=b"  " + value + b"\n", headers=JSON).status_code == 200
    r = http.get(url)
    assert (r.status_code, r.content) == (200, value)  # stored null is a value: 200 null


@pytest.mark.parametrize(
    "key",
    ["a/b", "q?x=1", "frag#ment", "with space", "clé", "100%", "a+b", "%2F", ".", "..", "日本/語", "x" * 600],
)
def test_tricky_keys_via_percent_encoding(key: str, http: httpx.Client) -> None:
    ns = "n s/é"
    url = kv(ns, key)
    r = http.put(url, content=orjson.dumps({"key": key}), headers=JSON)
    assert r.status_code == 200
    assert r.json() == {"ok": True, "namespace": ns, "key": key}
    assert http.get(url).json() == {"key": key}
    r = http.post(stream(ns, key, "append"), content=b"1", headers=JSON)
    assert r.json() == {"ok": True, "namespace": ns, "stream": key, "offset": 0}
    assert http.get(stream(ns, key, "read")).json() == [{"offset": 0, "value": 1}]
    assert http.delete(url).json() == {"ok": True, "namespace": ns, "key": key}
    assert http.get(url).status_code == 404


def test_namespace_and_key_never_collide(http: httpx.Client) -> None:
    pairs = [("a\x1fb", "c"), ("a", "b\x1fc"), ("a%1Fb", "c"), ("a\x1fb\x1fc", "d")]
    for i, (ns, key) in enumerate(pairs):
        assert http.put(kv(ns, key), content=str(i).encode(), headers=JSON).status_code == 200
    assert [http.get(kv(ns, key)).content for ns, key in pairs] == [b"0", b"1", b"2", b"3"]


def test_path_that_is_not_utf8_is_400(http: httpx.Client) -> None:
    r = http.get("/api/kv/ns/%FF%FE")
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/plain")


# ---------------------------------------------------------------------- bodies: 400, 413, 415
@pytest.mark.parametrize("body", [b"{bad", b"", b"   ", b"[1,]", b"NaN", b'{"a":1} {"b":2}', b"\xff"])
def test_malformed_json_is_400_plain_text(body: bytes, http: httpx.Client) -> None:
    for method, url in (("PUT", kv("bad", "k")), ("POST", stream("bad", "s", "append"))):
        r = http.request(method, url, content=body, headers=JSON)
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("text/plain")
    assert http.get(kv("bad", "k")).status_code == 404
    assert http.get(stream("bad", "s", "read")).json() == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "json"])
def test_missing_or_wrong_content_type_is_415(content_type: str | None, http: httpx.Client) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    for method, url in (("PUT", kv("ct", "k")), ("POST", stream("ct", "s", "append"))):
        r = http.request(method, url, content=b"{}", headers=headers)
        assert r.status_code == 415
    assert http.get(kv("ct", "k")).status_code == 404


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/x+json"]
)
def test_json_content_type_variants_are_accepted(content_type: str, http: httpx.Client) -> None:
    url = kv("ct-ok", content_type)
    assert http.put(url, content=b"[1]", headers={"Content-Type": content_type}).status_code == 200
    assert http.get(url).content == b"[1]"


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    big = orjson.dumps("x" * MAX_BODY)
    assert http.put(kv("big", "k"), content=big, headers=JSON).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'"'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"y" * 1024
        yield b'"'

    assert http.post(stream("big", "s", "append"), content=chunks(), headers=JSON).status_code == 413
    just = orjson.dumps("z" * (MAX_BODY - 2))
    assert http.put(kv("big", "k"), content=just, headers=JSON).status_code == 200
    assert http.get(kv("big", "k")).content == just
    assert http.get(stream("big", "s", "read")).json() == []
    assert http.get("/health").status_code == 200  # the connection is still good


# ---------------------------------------------------------------------- streams
def test_append_and_read(http: httpx.Client) -> None:
    for i in range(5):
        r = http.post(stream("st", "s", "append"), content=orjson.dumps({"i": i}), headers=JSON)
        assert r.status_code == 200
        assert r.json() == {"ok": True, "namespace": "st", "stream": "s", "offset": i}
    r = http.get(stream("st", "s", "read"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == [{"offset": i, "value": {"i": i}} for i in range(5)]
    read = stream("st", "s", "read")
    assert http.get(read, params={"start": 2, "count": 2}).json() == [
        {"offset": 2, "value": {"i": 2}},
        {"offset": 3, "value": {"i": 3}},
    ]
    assert http.get(read, params={"start": 5}).json() == []
    assert http.get(stream("st", "unknown", "read")).json() == []
    assert http.get(stream("st2", "s", "read")).json() == []  # streams are per namespace
    r = http.post(stream("st2", "s", "append"), content=b"null", headers=JSON)
    assert r.json()["offset"] == 0
    assert http.get(stream("st2", "s", "read")).content == b'[{"offset":0,"value":null}]'


def test_read_clamps_count_and_treats_negative_start_as_zero(
    http: httpx.Client, server: RedDBServerProcess
) -> None:
    # 1005 rows written by this process straight into the server's LMDB environment (LMDB is
    # multi-process): faster than 1005 requests, and the server must see another writer's rows
    store = LocalStore(server.data_dir, durable=False)
    try:
        with store.write() as batch:
            for i in range(1005):
                store.append(batch, storage_name("clamp", "s"), b"%d" % i)
    finally:
        store.close()
    read = stream("clamp", "s", "read")

    def offsets(**params: object) -> list[int]:
        r = http.get(read, params=params)
        assert r.status_code == 200
        return [row["offset"] for row in r.json()]

    assert offsets() == list(range(100))
    assert offsets(count=0) == [0]
    assert offsets(count=-7) == [0]
    assert offsets(count=5000) == list(range(1000))
    assert offsets(start=-3, count=2) == [0, 1]
    assert offsets(start="+1000", count="1000") == list(range(1000, 1005))
    assert offsets(start=1004, count=1000) == [1004]
    assert offsets(start=2**63 - 1) == []
    assert http.get(read, params={"start": 1003}).json() == [
        {"offset": 1003, "value": 1003},
        {"offset": 1004, "value": 1004},
    ]
    assert http.post(stream("clamp", "s", "append"), content=b"0", headers=JSON).json()["offset"] == 1005


@pytest.mark.parametrize(
    "query",
    [
        "start=abc",
        "count=1.5",
        "start=",
        "count",
        "count=99999999999999999999",
        "start=1&start=2",
        "count=1e3",
    ],
)
def test_read_with_a_non_integer_parameter_is_400(query: str, http: httpx.Client, anon: httpx.Client) -> None:
    for client in (http, anon):  # the query is checked before the token, like axum's extractor
        r = client.get(stream("q", "s", "read") + "?" + query)
        assert r.status_code == 400
        assert r.headers["content-type"].startswith("text/plain")


def test_concurrent_appends_get_each_offset_exactly_once(server: RedDBServerProcess) -> None:
    url = stream("conc", "s", "append")
    results: dict[int, list[int]] = {}

    def worker(t: int) -> None:
        with server.client() as client:
            results[t] = [
                client.post(url, content=orjson.dumps({"t": t, "i": i}), headers=JSON).json()["offset"]
                for i in range(200)
            ]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(off for offs in results.values() for off in offs) == list(range(800))
    with server.client() as client:
        rows = client.get(stream("conc", "s", "read"), params={"count": 1000}).json()
    assert len(rows) == 800
    for row in rows:  # each row is the value whose append was acknowledged with that offset
        assert results[row["value"]["t"]][row["value"]["i"]] == row["offset"]
    for offs in results.values():  # one client's appends are ordered
        assert offs == sorted(offs)


# ---------------------------------------------------------------------- auth
def test_auth_rejects_missing_or_wrong_tokens(anon: httpx.Client) -> None:
    wrong = [
        {},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"bearer {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
    ]
    for headers in wrong:
        calls = [
            anon.put(kv("auth", "k"), content=b"1", headers={**JSON, **headers}),
            anon.get(kv("auth", "k"), headers=headers),
            anon.delete(kv("auth", "k"), headers=headers),
            anon.post(stream("auth", "s", "append"), content=b"1", headers={**JSON, **headers}),
            anon.get(stream("auth", "s", "read"), headers=headers),
        ]
        for r in calls:
            assert r.status_code == 401
            assert r.json() == UNAUTHORIZED


def test_auth_accepts_the_token(admin: httpx.Client, anon: httpx.Client) -> None:
    assert admin.put(kv("auth", "ok"), content=b'{"v":1}', headers=JSON).status_code == 200
    assert admin.get(kv("auth", "ok")).json() == {"v": 1}
    assert admin.post(stream("auth", "ok", "append"), content=b"7", headers=JSON).json()["offset"] == 0
    assert admin.get(stream("auth", "ok", "read")).json() == [{"offset": 0, "value": 7}]
    assert anon.get(kv("auth", "ok")).status_code == 401  # still locked for others
    assert admin.delete(kv("auth", "ok")).status_code == 200
    assert admin.get(kv("auth", "ok")).status_code == 404


def test_bad_body_is_answered_before_auth(anon: httpx.Client) -> None:
    assert anon.put(kv("auth", "b"), content=b"{bad", headers=JSON).status_code == 400
    assert anon.post(stream("auth", "b", "append"), content=b"{}").status_code == 415


def test_any_authorization_header_is_fine_when_auth_is_off(http: httpx.Client) -> None:
    r = http.put(kv("open", "k"), content=b"1", headers={**JSON, "Authorization": "Bearer whatever"})
    assert r.status_code == 200
    assert http.get(kv("open", "k"), headers={"Authorization": "junk"}).content == b"1"


def test_token_never_reaches_the_logs(auth_server: RedDBServerProcess, admin: httpx.Client) -> None:
    admin.put(kv("log", "k"), content=b"1", headers=JSON)
    admin.get(kv("log", "k"))
    with auth_server.client(headers={"Authorization": f"Bearer {TOKEN}-wrong"}) as wrong:
        assert wrong.get(kv("log", "k")).status_code == 401
    out = auth_server.output()
    assert "auth: on" in out
    assert "PUT /api/kv/log/k" in out  # the access log is on: the check below is not vacuous
    assert TOKEN[4:12] not in out  # not even a prefix (the old server printed 8 characters)
    assert TOKEN not in out


# ---------------------------------------------------------------------- lifecycle
def test_data_survives_graceful_restart_and_kill(
    reddb_server_factory: Callable[..., RedDBServerProcess],
) -> None:
    srv: RedDBServerProcess = reddb_server_factory(token=TOKEN)
    assert TOKEN not in repr(srv)
    with srv.client() as c:
        assert c.put(kv("life", "k"), content=b'{"x":1}', headers=JSON).status_code == 200
        for i in range(3):
            assert (
                c.post(stream("life", "s", "append"), content=b"%d" % i, headers=JSON).json()["offset"] == i
            )
    port = srv.port
    assert srv.stop() == 0  # SIGTERM: graceful, exit code 0
    srv.start()
    assert srv.port == port
    with srv.client() as c:
        assert c.get(kv("life", "k")).json() == {"x": 1}
        assert c.post(stream("life", "s", "append"), content=b"3", headers=JSON).json()["offset"] == 3
    assert srv.kill() == -9  # a crash: every acknowledged write was committed (and fsynced)
    srv.start()
    with srv.client() as c:
        rows = c.get(stream("life", "s", "read")).json()
        assert rows == [{"offset": i, "value": i} for i in range(4)]
    srv.stop()
    assert srv.starts == 3
    assert TOKEN not in srv.output()


def test_reddb_server_fixture_is_a_fresh_open_server(reddb_server: RedDBServerProcess) -> None:
    assert reddb_server.running and reddb_server.token is None and reddb_server.headers == {}
    with reddb_server.client() as client:
        health = client.get("/api/health").json()
        assert health["auth_enabled"] is False
        assert health["data_dir"] == str(reddb_server.data_dir.resolve())
        assert client.get(stream("conc", "s", "read")).json() == []  # not the module server's data
    assert reddb_server.stop() == 0 and not reddb_server.running


def test_startup_failures_exit_non_zero_with_a_message(server: RedDBServerProcess, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    cases = [
        (["--path", str(not_a_dir), "--port", str(server.port)], 2, "engine serve: error:"),
        (["--path", str(tmp_path / "d"), "--port", str(server.port)], 3, "address already in use"),
    ]
    for args, code, message in cases:
        done = subprocess.run(
            [sys.executable, "-m", "engine.server", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == code
        assert message in done.stderr
        assert "Traceback" not in done.stderr
    with server.client() as client:  # the running server was not disturbed
        assert client.get("/health").status_code == 200


def test_import_engine_server_does_not_load_uvicorn() -> None:
    code = "import sys, engine.server; print(sorted(m for m in ('uvicorn', 'starlette') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


def test_missing_uvicorn_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import engine.server

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(ConfigError, match=r"reddb-engine\[server\]"):
        engine.server.serve(str(tmp_path / "d"))
    assert not (tmp_path / "d").exists()  # nothing was created before the check
    assert engine.server.main(["--path", str(tmp_path / "d"), "--port", "1"]) == 2


def test_storage_names_are_unambiguous_and_fit_lmdb() -> None:
    names = {
        storage_name(ns, key) for ns, key in [("a\x1fb", "c"), ("a", "b\x1fc"), ("a%1Fb", "c"), ("a", "b")]
    }
    assert len(names) == 4
    long_a, long_b = storage_name("ns", "x" * 1000), storage_name("ns", "x" * 999 + "y")
    assert long_a != long_b
    assert max(len(long_a.encode()), len(storage_name("é" * 300, "k").encode())) <= 511
