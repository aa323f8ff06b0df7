"""A minimal keep-alive HTTP/1.1 client for plain-http RedDB URLs, used by the syncer.

Why it exists: for the syncer's many small appends the client's CPU, not the
network, was the cost. Measured against `engine serve` on loopback (2-core VM):
an append through `httpx.Client` + httpcore cost ~0.6 ms of client CPU, about
twice the server's whole answer; with every replication lane's thread sharing
one GIL, that, not the server, bounded the syncer. This module sends a request
as one prebuilt byte string with one sendall() on a per-thread keep-alive
socket and parses the answer itself (status line, headers, Content-Length or
chunked body), about 0.05 ms.

`KeepAliveTransport` is an httpx transport (so `RedDBClient` can hand it to its
`httpx.Client` for everything) and also offers `exchange()`, which `RedDBClient`
calls directly for plain-http requests, skipping httpx's request and response
objects. `RedDBClient` still owns URLs, auth, timeouts and the error table:
failures are raised as the httpx exceptions that table maps: ConnectError /
ConnectTimeout when nothing was sent, WriteTimeout / ReadTimeout /
RemoteProtocolError (ambiguous) after. An idle socket the server closed is
noticed (readable before use) and replaced before anything is written to it.
No TLS: https URLs keep httpx's own transport.

Three system calls a request: a non-blocking peek (has the server closed the
idle socket?), one send and, for a small answer, one recv. The read and write
timeouts are the kernel's (SO_RCVTIMEO / SO_SNDTIMEO on a blocking socket):
with a Python-level socket timeout every send and recv is preceded by a poll,
and each call releases and retakes the GIL that the syncer's lanes share.
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import threading

import httpx

__all__ = ["KeepAliveTransport", "Reply"]

MAX_HEAD_BYTES = 64 * 1024
"""An answer whose status line and headers exceed this is a protocol error."""

MAX_BODY_BYTES = 256 << 20
"""An answer whose body exceeds this is a protocol error (a stream page is well under 1 MiB)."""

_RECV = 256 * 1024


class Reply:
    """One HTTP answer: status, headers (lower-case names, bytes) and the whole body."""

    __slots__ = ("content", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        self.status = status
        self.headers = headers
        self.content = content

    def header(self, name: bytes) -> bytes | None:
        """The last value of header `name` (lower-case), or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


class _ProtocolError(Exception):
    """The bytes that came back are not an HTTP/1.x answer we can use."""


_KERNEL_TIMEOUTS = sys.platform.startswith("linux")  # SO_RCVTIMEO as a struct timeval


def _readable(sock: socket.socket) -> bool:
    """True when an idle keep-alive socket has something to read: EOF (closed by the server) or junk."""
    if _KERNEL_TIMEOUTS:  # a blocking socket: one non-blocking peek
        try:
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return True
    poller = select.poll()  # not select(): it fails for descriptors >= 1024
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _set_timeout(sock: socket.socket, seconds: float | None, current: list[float | None]) -> None:
    """Give `sock` read and write timeouts of `seconds` (None: none); `current` caches the last value."""
    if current[0] == seconds:
        return
    if not _KERNEL_TIMEOUTS:
        sock.settimeout(seconds)
    else:
        usec = 0 if seconds is None else max(1, round(seconds * 1e6))
        tv = struct.pack("@ll", usec // 1_000_000, usec % 1_000_000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    current[0] = seconds


class _Reader:
    """Reads one answer from a socket: buffered, never past what the answer's framing says."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def fill(self) -> None:
        chunk = self.sock.recv(_RECV)
        if not chunk:
            raise _ProtocolError("the server closed the connection before the answer was complete")
        self.buf += chunk

    def line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > MAX_HEAD_BYTES:
                raise _ProtocolError("a header or chunk-size line is too long")
            self.fill()
        out = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return out

    def exactly(self, n: int) -> bytes:
        if n > MAX_BODY_BYTES:
            raise _ProtocolError(f"an answer body of {n} bytes is over the limit of {MAX_BODY_BYTES}")
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def head(self) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD_BYTES:
                raise _ProtocolError(f"the answer's head is over {MAX_HEAD_BYTES} bytes")
            self.fill()
        lines = bytes(self.buf[:end]).split(b"\r\n")
        del self.buf[: end + 4]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
            raise _ProtocolError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        headers: list[tuple[bytes, bytes]] = []
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep or not name or name != name.strip():
                raise _ProtocolError(f"malformed header line: {raw[:60]!r}")
            headers.append((name.lower(), value.strip()))
        return parts[0], int(parts[1]), headers


def _read_reply(sock: socket.socket, method: bytes) -> tuple[Reply, bool]:
    """Read one answer; return it and whether the connection must be closed afterwards."""
    reader = _Reader(sock)
    version, status, headers = reader.head()
    while 100 <= status < 200:  # interim answers (we never ask for them): skip
        version, status, headers = reader.head()
    reply = Reply(status, headers, b"")
    connection = (reply.header(b"connection") or b"").lower()
    close = connection == b"close" or (version == b"HTTP/1.0" and connection != b"keep-alive")
    encoding = (reply.header(b"transfer-encoding") or b"").lower()
    length = reply.header(b"content-length")
    if method == b"HEAD" or status in (204, 304):
        pass
    elif encoding:
        if encoding != b"chunked":
            raise _ProtocolError(f"unsupported transfer-encoding {encoding[:30]!r}")
        parts: list[bytes] = []
        total = 0
        while size := int(reader.line().split(b";", 1)[0].strip() or b"x", 16):
            total += size
            if total > MAX_BODY_BYTES:
                raise _ProtocolError(f"a chunked answer over the limit of {MAX_BODY_BYTES} bytes")
            parts.append(reader.exactly(size))
            if reader.exactly(2) != b"\r\n":
                raise _ProtocolError("a chunk is not followed by CRLF")
        while reader.line():  # trailers, up to the empty line
            pass
        reply.content = b"".join(parts)
    elif length is not None:
        if not length.isdigit():
            raise _ProtocolError(f"bad content-length {length[:30]!r}")
        reply.content = reader.exactly(int(length))
    else:  # no framing: the body runs to the end of the connection
        while chunk := sock.recv(_RECV):
            reader.buf += chunk
            if len(reader.buf) > MAX_BODY_BYTES:
                raise _ProtocolError(f"an answer body over the limit of {MAX_BODY_BYTES} bytes")
        reply.content, close = bytes(reader.buf), True
        reader.buf.clear()
    if reader.buf:  # bytes beyond the answer: the connection is out of step
        close = True
    return reply, close


class KeepAliveTransport(httpx.BaseTransport):
    """Plain-HTTP transport: a keep-alive socket per thread, one sendall() per request.

    `exchange()` is the direct path RedDBClient uses; `handle_request()` serves an
    httpx.Client with the same sockets and parser.
    """

    def __init__(self) -> None:
        self._tls = threading.local()
        self._mu = threading.Lock()
        self._socks: set[socket.socket] = set()

    def exchange(
        self,
        addr: tuple[str, int],
        method: bytes,
        data: bytes,
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
        request: httpx.Request | None = None,
    ) -> Reply:
        """Send `data` (a whole HTTP/1.1 request) to `addr` and return the answer.

        Raises ConnectError/ConnectTimeout (nothing sent), WriteTimeout/ReadTimeout or
        RemoteProtocolError (sent, maybe processed).
        """
        sock = self._socket(addr, connect_timeout, request)
        phase: type[httpx.TimeoutException] = httpx.WriteTimeout
        try:
            _set_timeout(sock, read_timeout, self._tls.timeout)
            sock.sendall(data)
            phase = httpx.ReadTimeout
            reply, close = _read_reply(sock, method)
        except (TimeoutError, BlockingIOError) as exc:  # BlockingIOError: a kernel timeout (EAGAIN)
            self._drop(sock)
            raise phase(f"timed out: {exc}", request=request) from exc
        except (OSError, ValueError, _ProtocolError) as exc:
            self._drop(sock)
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from exc
        if close:
            self._drop(sock)
        return reply

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        head = b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)
        head += b"".join(k + b": " + v + b"\r\n" for k, v in request.headers.raw)
        reply = self.exchange(
            (request.url.host, request.url.port or 80),
            request.method.encode(),
            head + b"\r\n" + request.read(),
            connect_timeout=timeout.get("connect"),
            read_timeout=timeout.get("read"),
            request=request,
        )
        return httpx.Response(reply.status, headers=reply.headers, content=reply.content)

    def _socket(
        self, addr: tuple[str, int], timeout: float | None, request: httpx.Request | None
    ) -> socket.socket:
        sock: socket.socket | None = getattr(self._tls, "sock", None)
        if sock is not None and (self._tls.addr != addr or _readable(sock)):
            self._drop(sock)  # another server, or the server closed it while idle
            sock = None
        if sock is None:
            try:
                sock = socket.create_connection(addr, timeout=timeout)
            except TimeoutError as exc:
                raise httpx.ConnectTimeout(f"timed out: {exc}", request=request) from exc
            except OSError as exc:
                raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from exc
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if _KERNEL_TIMEOUTS:
                sock.settimeout(None)  # blocking: the kernel times out sends and receives
            self._tls.sock, self._tls.addr, self._tls.timeout = sock, addr, [-1.0]
            with self._mu:
                self._socks.add(sock)
        return sock

    def _drop(self, sock: socket.socket) -> None:
        if getattr(self._tls, "sock", None) is sock:
            self._tls.sock = None
        with self._mu:
            self._socks.discard(sock)
        sock.close()

    def close(self) -> None:
        with self._mu:
            socks, self._socks = self._socks, set()
        for sock in socks:
            sock.close()
