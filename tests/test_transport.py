"""engine.transport: the syncer's keep-alive HTTP/1.1 client, against tiny scripted socket servers.

RedDBClient uses `KeepAliveTransport.exchange()` directly for plain-http URLs; these tests check the
bytes it sends, the answers it can parse (Content-Length, chunked, to-EOF, interim 1xx, close), and
that every failure maps to the typed, ambiguity-flagged errors the syncer relies on.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from engine.errors import AuthError, RemoteError, RemoteTimeoutError
from engine.remote import RedDBClient, is_ambiguous
from engine.transport import MAX_HEAD_BYTES, KeepAliveTransport
from tests.httpwire import read_message

TOKEN = "transport-t0ken-9a8b7c"
HUGE_HEAD = b"HTTP/1.1 200 OK\r\nx-pad: " + b"x" * MAX_HEAD_BYTES


class TinyServer:
    """A loopback socket server running `serve(conn)` for every connection it accepts."""

    def __init__(self, serve: Callable[[socket.socket], Any]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.requests: list[bytes] = []
        self.hung_up = threading.Event()  # set when the server closed a connection
        self.serve = serve
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            self.serve(conn)
        self.hung_up.set()

    def close(self) -> None:
        self.sock.close()


def read_request(conn: socket.socket) -> bytes | None:
    """One whole request (head + Content-Length body), or None at EOF."""
    return read_message(conn)[0]


def replying(*answers: bytes, close: bool = False) -> Callable[[socket.socket], None]:
    """A server that answers each request with the next raw answer, then closes or waits for EOF."""

    def serve(conn: socket.socket) -> None:
        for answer in answers:
            if read_request(conn) is None:
                return
            conn.sendall(answer)
        if not close:
            read_request(conn)

    return serve


def ok(body: bytes = b'{"ok":true,"offset":7}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


def client(url: str, **kw: Any) -> RedDBClient:
    return RedDBClient(url, token=TOKEN, transport=KeepAliveTransport(), **kw)


@pytest.fixture
def servers():
    made: list[TinyServer] = []

    def make(serve: Callable[[socket.socket], Any]) -> TinyServer:
        made.append(TinyServer(serve))
        return made[-1]

    yield make
    for server in made:
        server.close()


# ---------------------------------------------------------------------- what is sent
def test_direct_path_sends_one_complete_request(servers):
    seen: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        while (req := read_request(conn)) is not None:
            seen.append(req)
            conn.sendall(ok(b"[]") if req.startswith(b"GET") else ok())

    server = servers(serve)
    with client(server.url, namespace="n s") as c:
        assert c.append_raw("a/b?c#d é", b'{"x":1}') == 7
        assert c.read("s", 5, 3) == []
    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/streams/n%20s/a%2Fb%3Fc%23d%20%C3%A9/append HTTP/1.1"
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers[b"Host"] == server.url.removeprefix("http://").encode()
    assert headers[b"Authorization"] == b"Bearer " + TOKEN.encode()
    assert headers[b"Content-Type"] == b"application/json"
    assert headers[b"Content-Length"] == b"7" and body == b'{"x":1}'
    assert seen[1].split(b"\r\n", 1)[0] == b"GET /api/streams/n%20s/s/read?start=5&count=3 HTTP/1.1"
    assert server.connections == 1


def test_read_through_the_direct_path(servers):
    page = b'[{"offset":5,"value":{"a":1}},{"offset":6,"value":null}]'
    server = servers(replying(ok(page)))
    with client(server.url) as c:
        assert c.read("s", 5, 10) == [(5, {"a": 1}), (6, None)]


# ---------------------------------------------------------------------- what can be parsed
@pytest.mark.parametrize(
    "answer",
    [
        # chunked, with an extension and a trailer
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b'5;ext=1\r\n{"ok"\r\n11\r\n:true,"offset":7}\r\n0\r\nx-trailer: 1\r\n\r\n',
        # an interim 100 Continue first
        b"HTTP/1.1 100 Continue\r\n\r\n" + ok(),
        # header names in any case, values with spaces around them
        b"HTTP/1.1 200 OK\r\nContent-Length:   22  \r\n\r\n" + b'{"ok":true,"offset":7}',
    ],
    ids=["chunked", "interim-100", "header-case"],
)
def test_answers_in_every_framing_parse(servers, answer):
    server = servers(replying(answer, answer))
    with client(server.url) as c:
        assert [c.append_raw("s", b"1"), c.append_raw("s", b"1")] == [7, 7]
    assert server.connections == 1  # kept alive


@pytest.mark.parametrize(
    "answer",
    [
        ok(extra=b"connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\ncontent-length: 22\r\n\r\n" + b'{"ok":true,"offset":7}',
        b"HTTP/1.1 200 OK\r\n\r\n" + b'{"ok":true,"offset":7}',  # no length: body to EOF
    ],
    ids=["connection-close", "http-1.0", "to-eof"],
)
def test_answers_that_end_the_connection_get_a_fresh_one(servers, answer):
    server = servers(replying(answer, close=True))
    with client(server.url) as c:
        assert [c.append_raw("s", b"1"), c.append_raw("s", b"1")] == [7, 7]
    assert server.connections == 2


def test_keeps_one_connection_and_replaces_one_the_server_closed(servers):
    server = servers(replying(ok(), ok(), ok(), close=True))
    with client(server.url) as c:
        assert [c.append_raw("s", b"1") for _ in range(3)] == [7, 7, 7]
        assert server.connections == 1
        assert server.hung_up.wait(5)
        assert c.append_raw("s", b"1") == 7  # a fresh connection, nothing sent on the dead one
        assert server.connections == 2


def test_error_statuses_keep_their_meaning(servers):
    unauthorized = b'{"ok":false,"error":"unauthorized"}'
    answers = [
        ok(unauthorized).replace(b"200 OK", b"401 Unauthorized"),
        ok(b'{"ok":false,"error":"db"}').replace(b"200 OK", b"500 Internal Server Error"),
        ok(b'{"ok":false,"error":"not found"}').replace(b"200 OK", b"404 Not Found"),
    ]
    server = servers(replying(*answers))
    with client(server.url) as c:
        with pytest.raises(AuthError):
            c.append_raw("s", b"1")
        with pytest.raises(RemoteError) as info:
            c.append_raw("s", b"1")
        assert info.value.status == 500 and is_ambiguous(info.value)
        assert c.kv_get("k", "dflt") == "dflt"


# ---------------------------------------------------------------------- failures
@pytest.mark.parametrize(
    ("serve", "error"),
    [
        (lambda conn: conn.recv(65536), RemoteError),  # read the request, then hang up
        (lambda conn: (conn.recv(65536), time.sleep(1)), RemoteTimeoutError),
        (lambda conn: (conn.recv(65536), conn.sendall(b"garbage\r\n\r\n")), RemoteError),
        (lambda conn: (conn.recv(65536), conn.sendall(HUGE_HEAD)), RemoteError),
        (lambda conn: (conn.recv(65536), conn.sendall(ok()[:-3])), RemoteError),  # body cut short
        (
            lambda conn: (conn.recv(65536), conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n")),
            RemoteError,
        ),
        (
            lambda conn: (
                conn.recv(65536),
                conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
            ),
            RemoteError,
        ),
    ],
    ids=["hang-up", "hang", "garbage", "huge-head", "short-body", "bad-length", "bad-chunk"],
)
def test_failures_after_sending_are_ambiguous(servers, serve, error):
    server = servers(serve)
    with client(server.url, read_timeout=0.2) as c:
        with pytest.raises(error) as info:
            c.append_raw("s", b"1")
    assert is_ambiguous(info.value) is True and TOKEN not in str(info.value)


def test_refused_connection_is_not_ambiguous():
    port = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{port.getsockname()[1]}"
    port.close()
    with client(url) as c, pytest.raises(RemoteError) as info:
        c.append_raw("s", b"1")
    assert is_ambiguous(info.value) is False


def test_closed_client_refuses_before_sending(servers):
    server = servers(replying(ok()))
    c = client(server.url)
    c.close()
    with pytest.raises(RemoteError, match="closed") as info:
        c.append_raw("s", b"1")
    assert is_ambiguous(info.value) is False and server.connections == 0


def test_serves_an_httpx_client_too(servers):
    server = servers(replying(ok(b'{"hello":1}')))
    with httpx.Client(transport=KeepAliveTransport()) as http:
        resp = http.post(server.url + "/x", content=b"{}")
    assert resp.status_code == 200 and resp.json() == {"hello": 1}


def test_a_new_read_timeout_applies_to_a_kept_connection(servers):
    def serve(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(ok())
        read_request(conn)
        time.sleep(1)  # then hang up: a client still on the first, 30 s timeout sees a reset, not a timeout

    server = servers(serve)
    transport = KeepAliveTransport()
    addr = ("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    request = b"POST /api/streams/n/s/append HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1"
    try:
        first = transport.exchange(addr, b"POST", request, connect_timeout=5, read_timeout=30)
        assert first.status == 200
        with pytest.raises(httpx.ReadTimeout):
            transport.exchange(addr, b"POST", request, connect_timeout=5, read_timeout=0.2)
    finally:
        transport.close()
    assert server.connections == 1  # the second request went out on the kept connection
