"""Tests for engine.remote: URLs, path encoding, auth, the error table, paging, real sockets.

Faults a real server cannot easily produce are injected with httpx.MockTransport;
timeouts, refused connections and keep-alive are checked against tiny loopback
socket servers started and stopped by the tests. The round trip against the
engine's own RedDB-compatible server lives in tests/integration/.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

import certifi
import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import (
    AuthError,
    ConfigError,
    EngineError,
    NotFoundError,
    RemoteError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    ValidationError,
)
from engine.remote import ERROR_BODY_CHARS, MAX_SEGMENT_BYTES, RedDBClient, client_for, is_ambiguous

TOKEN = "s3cr3t-T0KEN-9f8e7d"
BASE = "http://reddb.test:8080"

Handler = Callable[[httpx.Request], httpx.Response]
Make = Callable[..., RedDBClient]
Op = Callable[[RedDBClient], Any]


@pytest.fixture(autouse=True)
def _no_env_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDDB_TOKEN", raising=False)


class Recorder:
    """A MockTransport handler that records every request and answers with `respond`."""

    def __init__(self, respond: Handler | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.respond = respond or (lambda request: httpx.Response(200, json={"ok": True, "offset": 0}))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)

    @property
    def paths(self) -> list[str]:
        return [r.url.raw_path.decode("ascii").partition("?")[0] for r in self.requests]


@pytest.fixture
def make_client() -> Iterator[Make]:
    clients: list[RedDBClient] = []

    def make(handler: Handler, url: str = BASE, **kwargs: Any) -> RedDBClient:
        kwargs.setdefault("token", TOKEN)
        clients.append(RedDBClient(url, transport=httpx.MockTransport(handler), **kwargs))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def answer(status: int, body: Any = None) -> Handler:
    """Always answer `status` with `body`: bytes are sent as they are, anything else as JSON."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return lambda request: httpx.Response(status, content=content)


def raising(exc: type[httpx.RequestError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("injected fault", request=request)

    return handler


ALL_OPS: list[tuple[str, Op]] = [
    ("health", lambda c: c.health()),
    ("kv_put", lambda c: c.kv_put("k", 1)),
    ("kv_put_raw", lambda c: c.kv_put_raw("k", b"1")),
    ("kv_get", lambda c: c.kv_get("k")),
    ("kv_delete", lambda c: c.kv_delete("k")),
    ("append", lambda c: c.append("s", 1)),
    ("append_raw", lambda c: c.append_raw("s", b"1")),
    ("read", lambda c: c.read("s")),
    ("iter_stream", lambda c: list(c.iter_stream("s"))),
]
OPS = pytest.mark.parametrize("op", [op for _, op in ALL_OPS], ids=[name for name, _ in ALL_OPS])

# -- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_url", "normalised"),
    [
        ("http://h:1", "http://h:1"),
        ("http://h:1/", "http://h:1"),
        ("http://h:1///", "http://h:1"),
        ("HTTPS://h/prefix/", "https://h/prefix"),
        ("  http://[::1]:9/  ", "http://[::1]:9"),
    ],
)
def test_base_url_is_normalised(given_url: str, normalised: str) -> None:
    with RedDBClient(given_url) as client:
        assert client.url == normalised


def test_base_url_prefix_is_kept_in_request_paths(make_client: Make) -> None:
    rec = Recorder(answer(200, {}))
    client = make_client(rec, url="http://h/reddb//")
    client.kv_get("k")
    client.health()
    assert rec.paths == ["/reddb/api/kv/dspy/k", "/reddb/health"]


@pytest.mark.parametrize(
    ("bad_url", "secret"),
    [
        ("http://user:pw-SECRET@h:8080/", "pw-SECRET"),
        ("http://tok-SECRET@h/", "tok-SECRET"),
        ("http://h/?token=q-SECRET", "q-SECRET"),
        ("http://h/#f-SECRET", "f-SECRET"),
        *((url, None) for url in ("http://h/api?", "ftp://h/", "localhost:8080", "", "http://")),
        *((url, None) for url in ("http://h:99999/", "http://h:port/", 123)),
    ],
)
def test_bad_base_url_is_rejected_without_echoing_secrets(bad_url: Any, secret: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        RedDBClient(bad_url)
    assert secret is None or secret not in f"{info.value} {info.value!r}"


BAD_SETTINGS = [
    *(({field: value}, field) for field in ("connect_timeout", "read_timeout") for value in (None, 0, -1)),
    *(({"read_timeout": value}, "read_timeout") for value in (0.0, float("nan"), float("inf"), True, "5")),
    *(({"max_connections": value}, "max_connections") for value in (0, -3, 1.5, True)),
    ({"verify": 1}, "verify"),
    ({"verify": "/nonexistent/ca.pem"}, "CA bundle"),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD_SETTINGS)
def test_bad_settings_are_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RedDBClient(BASE, **kwargs)


def test_verify_accepts_a_ca_bundle_path() -> None:
    with RedDBClient("https://h", verify=certifi.where()) as client:
        assert client.url == "https://h"


# -- path encoding ------------------------------------------------------------------------------------

TRICKY_KEYS = [
    ("a/b", "a%2Fb"),
    ("q?x=1", "q%3Fx%3D1"),
    ("frag#ment", "frag%23ment"),
    ("with space", "with%20space"),
    ("clé", "cl%C3%A9"),
    ("100%", "100%25"),
    ("dspy_agent:signatures:s1", "dspy_agent%3Asignatures%3As1"),
    ("...", "..."),
    ("k" * 1000, "k" * 1000),
]


@pytest.mark.parametrize(("key", "encoded"), TRICKY_KEYS)
def test_every_key_operation_sends_one_encoded_segment(make_client: Make, key: str, encoded: str) -> None:
    rec = Recorder(answer(200, {"ok": True}))
    client = make_client(rec)
    client.kv_put(key, {"v": 1})
    client.kv_put_raw(key, b"[1]")
    client.kv_get(key)
    client.kv_delete(key)
    assert rec.paths == [f"/api/kv/dspy/{encoded}"] * 4
    assert [r.method for r in rec.requests] == ["PUT", "PUT", "GET", "DELETE"]
    assert all(r.url.query == b"" for r in rec.requests)


@pytest.mark.parametrize(("stream", "encoded"), TRICKY_KEYS)
def test_stream_operations_send_one_encoded_segment(make_client: Make, stream: str, encoded: str) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ok": True, "offset": 3} if request.method == "POST" else [])

    rec = Recorder(respond)
    client = make_client(rec, namespace="ns/with space")
    assert client.append(stream, {"v": 1}) == 3
    assert client.read(stream, 5, 7) == []
    prefix = "/api/streams/ns%2Fwith%20space"
    assert rec.paths == [f"{prefix}/{encoded}/append", f"{prefix}/{encoded}/read"]
    assert rec.requests[1].url.params == httpx.QueryParams({"start": "5", "count": "7"})


BAD_SEGMENTS = ["", ".", "..", "x" * (MAX_SEGMENT_BYTES + 1), "é" * (MAX_SEGMENT_BYTES // 2 + 1), "\ud800"]


@pytest.mark.parametrize("bad", [*BAD_SEGMENTS, None, b"k", 5])
def test_bad_namespace_key_or_stream_is_rejected_before_any_request(make_client: Make, bad: Any) -> None:
    rec = Recorder()
    client = make_client(rec)
    calls: list[Callable[[], Any]] = [
        lambda: RedDBClient(BASE, namespace=bad),
        lambda: client.kv_put(bad, 1),
        lambda: client.kv_put_raw(bad, b"1"),
        lambda: client.kv_get(bad),
        lambda: client.kv_get(bad, None),
        lambda: client.kv_delete(bad),
        lambda: client.append(bad, 1),
        lambda: client.append_raw(bad, b"1"),
        lambda: client.read(bad),
        lambda: client.iter_stream(bad),
    ]
    for call in calls:
        with pytest.raises(ValidationError):
            call()
    assert rec.requests == []


def test_segment_limit_counts_utf8_bytes(make_client: Make) -> None:
    rec = Recorder(answer(200, 1))
    make_client(rec).kv_get("é" * (MAX_SEGMENT_BYTES // 2))  # exactly the limit in UTF-8 bytes
    assert rec.paths == ["/api/kv/dspy/" + "%C3%A9" * (MAX_SEGMENT_BYTES // 2)]


def test_any_text_key_reaches_the_server_intact() -> None:
    rec = Recorder(answer(200, 1))
    with RedDBClient(BASE, transport=httpx.MockTransport(rec)) as client:

        @settings(max_examples=200, deadline=None)
        @given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=200))
        def check(key: str) -> None:
            if key in (".", ".."):
                return
            client.kv_get(key)
            prefix, segment = rec.paths[-1].rsplit("/", 1)
            assert prefix == "/api/kv/dspy"
            assert not set(segment) & set("/?# ")
            assert unquote(segment, errors="strict") == key

        check()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        *((lambda c, v=v: c.read("s", start=v), "start") for v in (-1, 1.0, "0", True, None)),
        *((lambda c, v=v: c.read("s", count=v), "count") for v in (0, -5, 2.0, False)),
        *((lambda c, v=v: c.iter_stream("s", page=v), "page") for v in (0, 2.0, None)),
        *((lambda c, v=v: c.iter_stream("s", start=v), "start") for v in (-1, "0")),
        (lambda c: c.iter_stream(""), "stream"),
    ],
)
def test_bad_read_arguments_are_rejected(make_client: Make, call: Op, match: str) -> None:
    rec = Recorder()
    with pytest.raises(ValidationError, match=match):
        call(make_client(rec))
    assert rec.requests == []


# -- auth and bodies ----------------------------------------------------------------------------------


def test_bearer_token_goes_in_the_authorization_header_only(make_client: Make) -> None:
    rec = Recorder()
    client = make_client(rec)
    client.kv_put("k", {"a": 1})
    client.append("s", [1, 2])
    assert [r.headers["authorization"] for r in rec.requests] == [f"Bearer {TOKEN}"] * 2
    assert all(TOKEN not in str(r.url) for r in rec.requests)
    assert [r.headers["content-type"] for r in rec.requests] == ["application/json"] * 2
    assert [r.content for r in rec.requests] == [b'{"a":1}', b"[1,2]"]


def test_token_comes_from_the_environment_unless_given(
    make_client: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(answer(200, {}))
    make_client(rec, token=None).health()
    make_client(rec, token="").health()
    monkeypatch.setenv("REDDB_TOKEN", "from-env")
    make_client(rec, token=None).health()
    make_client(rec, token="explicit").health()
    headers = [r.headers.get("authorization") for r in rec.requests]
    assert headers == [None, None, "Bearer from-env", "Bearer explicit"]


@pytest.mark.parametrize("bad", [f"{TOKEN}\n", f"{TOKEN}\r\nX-Evil: 1", f" {TOKEN}", f"{TOKEN}é", 42])
def test_header_unsafe_token_is_rejected_without_echoing_it(bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        RedDBClient(BASE, token=bad)
    assert TOKEN not in f"{info.value} {info.value!r}"


def test_raw_bodies_are_sent_verbatim(make_client: Make) -> None:
    rec = Recorder()
    client = make_client(rec)
    body = b'{"z": 1,  "a": [1.50]}'
    client.kv_put_raw("k", body)
    assert client.append_raw("s", bytearray(body)) == 0
    client.append_raw("s", memoryview(body))
    assert [r.content for r in rec.requests] == [body] * 3
    for bad in (b"", "text", None):
        with pytest.raises(ValidationError):
            client.append_raw("s", bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        client.kv_put("k", {"x": object()})
    with pytest.raises(ValidationError):
        client.append("s", [float("nan")])
    assert len(rec.requests) == 3


# -- success shapes -----------------------------------------------------------------------------------


def test_health_returns_the_server_object(make_client: Make) -> None:
    doc = {"ok": True, "service": "reddb", "version": "1.0.0", "timestamp": 1.5, "auth_enabled": True}
    rec = Recorder(answer(200, doc))
    assert make_client(rec).health() == doc
    assert rec.paths == ["/health"]


@pytest.mark.parametrize("value", [None, 0, "", [], {"a": [1, {"b": None}]}, 1.25, "clé"])
def test_kv_get_returns_the_stored_value_itself(make_client: Make, value: Any) -> None:
    client = make_client(answer(200, value))
    assert client.kv_get("k") == value
    assert client.kv_get("k", default="fallback") == value


@pytest.mark.parametrize("body", [{"ok": False, "error": "not found"}, {"detail": "Key not found"}])
def test_kv_get_missing_key(make_client: Make, body: dict[str, Any]) -> None:
    client = make_client(answer(404, body))
    with pytest.raises(NotFoundError, match="'missing'"):
        client.kv_get("missing")
    sentinel = object()
    assert client.kv_get("missing", default=None) is None
    assert client.kv_get("missing", default=sentinel) is sentinel


@pytest.mark.parametrize(
    "body", [b"", b"Not Found", {"detail": "Not Found"}], ids=["empty", "text", "fastapi"]
)
def test_route_404_is_a_remote_error_even_for_kv_get_with_default(make_client: Make, body: Any) -> None:
    client = make_client(answer(404, body))
    for op in (lambda c: c.kv_get("k", None), lambda c: c.append("s", 1), lambda c: c.kv_delete("k")):
        with pytest.raises(RemoteError, match="RedDB URL") as info:
            op(client)
        assert info.value.status == 404
        assert not isinstance(info.value, NotFoundError)


def test_404_outside_kv_get_is_never_not_found(make_client: Make) -> None:
    client = make_client(answer(404, {"ok": False, "error": "not found"}))
    for op in (lambda c: c.append("s", 1), lambda c: c.kv_delete("k"), lambda c: c.read("s")):
        with pytest.raises(RemoteError) as info:
            op(client)
        assert info.value.status == 404


def test_read_returns_offset_value_tuples(make_client: Make) -> None:
    client = make_client(answer(200, [{"offset": 4, "value": {"a": 1}}, {"offset": 9, "value": None}]))
    assert client.read("s", start=4, count=2) == [(4, {"a": 1}), (9, None)]


class ClampingStream:
    """A MockTransport handler serving one stream of `n` rows like the reference server (count clamped)."""

    def __init__(self, n: int, clamp: int = 1000) -> None:
        self.n, self.clamp = n, clamp
        self.reads: list[tuple[int, int]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        start, count = int(request.url.params["start"]), int(request.url.params["count"])
        self.reads.append((start, count))
        end = min(self.n, start + max(1, min(count, self.clamp)))
        return httpx.Response(200, json=[{"offset": i, "value": {"i": i}} for i in range(start, end)])


@pytest.mark.parametrize(
    ("n", "start", "page", "reads"),
    [
        (2500, 100, 1000, [100, 1100, 2100, 2500]),
        (2500, 100, 5000, [100, 1100, 2100, 2500]),  # asks for 5000, the server clamps to 1000
        (7, 0, 3, [0, 3, 6, 7]),
        (0, 0, 1000, [0]),
    ],
)
def test_iter_stream_pages_through_a_clamping_server(
    make_client: Make, n: int, start: int, page: int, reads: list[int]
) -> None:
    server = ClampingStream(n)
    entries = list(make_client(server).iter_stream("s", start=start, page=page))
    assert entries == [(i, {"i": i}) for i in range(start, n)]
    assert server.reads == [(s, page) for s in reads]


# -- the error table ----------------------------------------------------------------------------------

STATUS_CASES = [
    (500, {"ok": False, "error": "database error: disk I/O"}, "database error: disk I/O", RemoteError, True),
    (500, {"detail": "Internal failure"}, "Internal failure", RemoteError, True),
    (500, b"Internal Server Error", "Internal Server Error", RemoteError, True),
    (503, b"", "(empty body)", RemoteError, True),
    (401, {"ok": False, "error": "unauthorized"}, "unauthorized", AuthError, False),
    (401, {"detail": "Invalid token"}, "Invalid token", AuthError, False),
    (400, {"ok": False, "error": "invalid json: EOF"}, "invalid json: EOF", RemoteError, False),
    (400, {"detail": "Invalid JSON body"}, "Invalid JSON body", RemoteError, False),
    (415, b"Expected request with `Content-Type: application/json`", "Content-Type", RemoteError, False),
    (422, {"detail": [{"loc": ["query", "start"], "msg": "not an int"}]}, "not an int", RemoteError, False),
    (405, {"detail": "Method Not Allowed"}, "Method Not Allowed", RemoteError, False),
    (302, b"", "HTTP 302", RemoteError, False),
]


@OPS
@pytest.mark.parametrize(("status", "body", "text", "error", "ambiguous"), STATUS_CASES)
def test_error_statuses_map_to_typed_errors(
    make_client: Make, op: Op, status: int, body: Any, text: str, error: type[RemoteError], ambiguous: bool
) -> None:
    with pytest.raises(RemoteError) as info:
        op(make_client(answer(status, body)))
    assert type(info.value) is error
    assert info.value.status == status
    assert text in str(info.value)
    assert f"HTTP {status}" in str(info.value)
    assert is_ambiguous(info.value) is ambiguous
    if error is AuthError:
        assert "REDDB_TOKEN" in str(info.value)  # the fix-it hint


def test_long_non_json_error_body_is_truncated(make_client: Make) -> None:
    page = ("<html><body>" + "proxy error " * 500 + "</body></html>").encode()
    with pytest.raises(RemoteError) as info:
        make_client(answer(502, page)).append("s", 1)
    message = str(info.value)
    assert info.value.status == 502
    assert "<html><body>proxy error" in message
    assert len(message) < ERROR_BODY_CHARS + 120
    assert message.endswith("...")


@OPS
@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe", b"<html>ok</html>"])
def test_malformed_json_in_a_200_is_a_remote_error(make_client: Make, op: Op, raw: bytes) -> None:
    with pytest.raises(RemoteError, match="malformed response") as info:
        op(make_client(answer(200, raw)))
    assert info.value.status == 200
    assert is_ambiguous(info.value) is True


SHAPE_OPS: dict[str, Op] = {
    "append": lambda c: c.append("s", 1),
    "read": lambda c: c.read("s", start=1),
    "iter_stream": lambda c: list(c.iter_stream("s", start=1)),
    "health": lambda c: c.health(),
}
ROWS = ("read", "iter_stream")
BAD_OFFSETS: list[Any] = [{"ok": True}, {"offset": "3"}, {"offset": True}, {"offset": -1}, [3], 3, None]
BAD_ROWS: list[Any] = [
    {"rows": []},
    [{"offset": 1}],
    [{"value": 1}],
    [5],
    [{"offset": "1", "value": 1}],
    [{"offset": 3, "value": 1}, {"offset": 3, "value": 2}],
    [{"offset": 4, "value": 1}, {"offset": 2, "value": 2}],
    [{"offset": 0, "value": 1}],  # below start=1: would make iter_stream loop forever
]


@pytest.mark.parametrize(
    ("ops", "body"),
    [
        *((("append",), body) for body in BAD_OFFSETS),
        *((ROWS, body) for body in BAD_ROWS),
        (("health",), [1]),
    ],
)
def test_wrong_answer_shapes_are_malformed(make_client: Make, ops: tuple[str, ...], body: Any) -> None:
    client = make_client(answer(200, body))
    for name in ops:
        with pytest.raises(RemoteError, match="malformed response") as info:
            SHAPE_OPS[name](client)
        assert info.value.status == 200
        assert is_ambiguous(info.value) is True


TRANSPORT_FAULTS = [
    (httpx.ConnectError, RemoteUnavailableError, False),
    (httpx.ConnectTimeout, RemoteTimeoutError, False),
    (httpx.PoolTimeout, RemoteTimeoutError, False),
    (httpx.ReadTimeout, RemoteTimeoutError, True),
    (httpx.WriteTimeout, RemoteTimeoutError, True),
    (httpx.RemoteProtocolError, RemoteUnavailableError, True),
    (httpx.ReadError, RemoteUnavailableError, True),
    (httpx.WriteError, RemoteUnavailableError, True),
    (httpx.DecodingError, RemoteError, True),
]


@OPS
@pytest.mark.parametrize(("fault", "error", "ambiguous"), TRANSPORT_FAULTS)
def test_transport_faults_map_to_typed_errors(
    make_client: Make, op: Op, fault: type[httpx.RequestError], error: type[RemoteError], ambiguous: bool
) -> None:
    with pytest.raises(RemoteError) as info:
        op(make_client(raising(fault)))
    assert type(info.value) is error
    assert info.value.status is None
    assert is_ambiguous(info.value) is ambiguous
    assert isinstance(info.value.__cause__, fault)
    assert "injected fault" in str(info.value)


def test_is_ambiguous_assumes_the_worst_for_foreign_errors() -> None:
    assert is_ambiguous(ValueError("x")) is True
    assert is_ambiguous(RemoteError("x")) is True


# -- lifecycle and the token ----------------------------------------------------------------------------


def test_close_is_idempotent_and_later_calls_raise(make_client: Make) -> None:
    rec = Recorder()
    client = make_client(rec, namespace="agents")
    assert repr(client) == f"RedDBClient(url={BASE!r}, namespace='agents', token=set)"
    assert repr(make_client(rec, token=None)) == f"RedDBClient(url={BASE!r}, namespace='dspy', token=unset)"
    with client as entered:
        assert entered is client
    client.close()
    with pytest.raises(RemoteError, match="closed") as info:
        client.append("s", 1)
    assert is_ambiguous(info.value) is False
    assert rec.requests == []


def _texts(err: BaseException | None) -> Iterator[str]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield from (str(err), repr(err), repr(err.args))
        err = err.__cause__ or err.__context__


def test_token_never_appears_in_messages_or_repr(make_client: Make) -> None:
    echo = orjson.dumps({"ok": False, "error": f"bad header Authorization: Bearer {TOKEN}"})
    handlers: list[Handler] = [
        *(answer(status, echo) for status in (500, 401, 404, 400)),
        answer(400, f"plain echo {TOKEN}".encode()),
        answer(404, b""),
        answer(200, b"{"),
        *(raising(fault) for fault, _, _ in TRANSPORT_FAULTS),
    ]
    texts: list[str] = []
    for handler in handlers:
        client = make_client(handler)
        texts.append(repr(client))
        for _, op in ALL_OPS:
            with pytest.raises(EngineError) as info:
                op(client)
            texts.extend(_texts(info.value))
    assert len(texts) > 300
    assert any("***" in text for text in texts)  # the echoed token was redacted, not dropped
    assert [text for text in texts if TOKEN in text] == []


# -- real sockets -------------------------------------------------------------------------------------


class SocketServer(socketserver.ThreadingTCPServer):
    """A loopback TCP server: with `reply=None` it accepts and never answers, else answers each request."""

    daemon_threads = True

    def __init__(self, reply: bytes | None = None) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.connections = 0
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


class _Handler(socketserver.StreamRequestHandler):
    server: SocketServer

    def handle(self) -> None:
        self.server.connections += 1
        if self.server.reply is None:
            self.server.stopping.wait()
            return
        while line := self.rfile.readline():
            head = [line]
            while (line := self.rfile.readline()) not in (b"\r\n", b""):
                head.append(line)
            length = sum(int(h[15:]) for h in head if h.lower().startswith(b"content-length:"))
            self.server.requests.append(b"".join(head) + b"\r\n" + self.rfile.read(length))
            self.wfile.write(self.server.reply)


@pytest.fixture
def hanging_server() -> Iterator[SocketServer]:
    server = SocketServer()
    yield server
    server.stop()


@pytest.fixture
def answering_server() -> Iterator[SocketServer]:
    body = b'{"ok":true,"offset":7}'
    server = SocketServer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    yield server
    server.stop()


def _call_in_thread(call: Callable[[], Any], bound: float = 10.0) -> BaseException | None:
    """Run `call` in a thread, assert it ends within `bound` seconds (hang detector), return its error."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), "the request hung past its read timeout"
    return outcome[0]


def test_server_that_never_answers_gives_a_timeout(hanging_server: SocketServer) -> None:
    with RedDBClient(hanging_server.url, token=TOKEN, read_timeout=0.2) as client:
        for call in (lambda: client.append("s", {"a": 1}), lambda: client.kv_get("k")):
            err = _call_in_thread(call)
            assert isinstance(err, RemoteTimeoutError)
            assert err.status is None
            assert is_ambiguous(err) is True
            assert TOKEN not in str(err)
    assert hanging_server.connections >= 1  # the connection was accepted: it is a read timeout


def test_refused_connection_is_unavailable_and_unambiguous() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with RedDBClient(f"http://127.0.0.1:{port}", connect_timeout=2.0) as client:
        err = _call_in_thread(lambda: client.append("s", 1))
    assert isinstance(err, RemoteUnavailableError)
    assert err.status is None
    assert is_ambiguous(err) is False


def test_keep_alive_wire_format_and_quiet_logs(
    answering_server: SocketServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with RedDBClient(answering_server.url + "/", token=TOKEN, namespace="ns 1") as client:
        client.health()
        client.kv_put("a/b", {"x": 1})
        assert client.append("q?x=1", [1]) == 7
        client.kv_delete("clé")
    assert answering_server.connections == 1  # one pooled keep-alive connection for all four
    heads = [request.split(b"\r\n\r\n")[0].split(b"\r\n") for request in answering_server.requests]
    assert [head[0] for head in heads] == [
        b"GET /health HTTP/1.1",
        b"PUT /api/kv/ns%201/a%2Fb HTTP/1.1",
        b"POST /api/streams/ns%201/q%3Fx%3D1/append HTTP/1.1",
        b"DELETE /api/kv/ns%201/cl%C3%A9 HTTP/1.1",
    ]
    for head in heads:
        auth = [line for line in head if line.lower().startswith(b"authorization:")]
        assert auth == [b"Authorization: Bearer " + TOKEN.encode()]
    assert answering_server.requests[1].endswith(b'\r\n\r\n{"x":1}')
    assert caplog.records, "httpx/httpcore debug logging should have produced records"
    assert TOKEN not in caplog.text


def test_client_for_takes_the_direct_path_for_plain_http_only():
    with (
        client_for("http://127.0.0.1:1", namespace="n") as plain,
        client_for("https://example.invalid") as tls,
    ):
        assert plain._direct is not None and plain.namespace == "n"
        assert tls._direct is None
