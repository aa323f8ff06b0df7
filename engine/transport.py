"""A minimal keep-alive HTTP/1.1 transport for httpx, used by the syncer for plain-http RedDB URLs.

httpcore writes a request's head and body in separate send() calls and runs
its h11 state machine around them; for the syncer's many small appends that
is most of the client's CPU. This transport keeps one socket per thread and
sends each request with one sendall(). RedDBClient still owns URLs, auth,
timeouts and the error table: failures are raised as the httpx exceptions
that table maps.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading

import httpx


def _readable(sock: socket.socket) -> bool:
    """True when an idle keep-alive socket has something to read: EOF (closed by the server) or junk."""
    poller = select.poll()  # not select(): it fails for descriptors >= 1024
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class KeepAliveTransport(httpx.BaseTransport):
    """Plain-HTTP transport for the syncer: a keep-alive socket per thread, one sendall() per request.

    httpcore writes a request's head and body in separate send() calls and wraps them in its h11
    state machine; for a small append that is most of the client's CPU (measured against `engine
    serve` here: 1.3-1.7 ms per entry with it, 0.75-1.0 ms with this). Failures are raised as the
    httpx exceptions RedDBClient's table maps: ConnectError/ConnectTimeout when nothing was sent,
    WriteTimeout/ReadTimeout/RemoteProtocolError (ambiguous) after. An idle socket the server closed
    is noticed (readable before use) and replaced before anything is written to it.
    """

    def __init__(self) -> None:
        self._tls = threading.local()
        self._mu = threading.Lock()
        self._socks: set[socket.socket] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        sock = self._socket(request, (request.url.host, request.url.port or 80), timeout.get("connect"))
        head = b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)
        head += b"".join(k + b": " + v + b"\r\n" for k, v in request.headers.raw)
        phase: type[httpx.TimeoutException] = httpx.WriteTimeout
        resp: http.client.HTTPResponse | None = None
        try:
            sock.settimeout(timeout.get("write"))
            sock.sendall(head + b"\r\n" + request.read())
            phase = httpx.ReadTimeout
            sock.settimeout(timeout.get("read"))
            resp = http.client.HTTPResponse(sock, method=request.method)
            resp.begin()
            content = resp.read()
        except TimeoutError as exc:
            self._drop(sock)
            raise phase(f"timed out: {exc}", request=request) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop(sock)
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from exc
        finally:
            if resp is not None:
                resp.close()  # the buffered reader over the socket; the socket itself stays open
        if resp.will_close:
            self._drop(sock)
        return httpx.Response(resp.status, headers=resp.getheaders(), content=content)

    def _socket(self, request: httpx.Request, addr: tuple[str, int], timeout: float | None) -> socket.socket:
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
            self._tls.sock, self._tls.addr = sock, addr
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
