"""The RedDB HTTP client: the one place that speaks the wire protocol.

Everything about talking to RedDB lives here so that it is decided once: the
base URL (normalised, never carrying credentials or a query), one keep-alive
`httpx.Client` connection pool shared by every thread, finite connect/read
timeouts, TLS verification on by default, the Bearer token in the
Authorization header only, percent-encoding of every path segment, and one
table that turns HTTP statuses and transport failures into the engine's
typed errors (see /work/shared/reddb-protocol.md for the contract).

Nothing is swallowed: every failure raises a `RemoteError` subclass carrying
the HTTP status (None when no response arrived) and an `ambiguous` flag that
says whether the request may have reached the server. RedDB appends are not
idempotent, so the syncer needs that flag to decide between a plain retry
(`ambiguous=False`: the server certainly did not apply it) and a read-back
(`ambiguous=True`: it may have). The client itself never retries: retry
policy, backoff and circuit breaking belong to the syncer.

The token never appears in a URL, an exception message, a `repr` or a log
line: it is checked once for header-safe characters (so a malformed token
cannot end up quoted in an h11 error), and any server-supplied error text
that echoes it is redacted.

Path segments (namespace, key, stream) are `urllib.parse.quote(seg, safe="")`
encoded, so `/`, `?`, `#`, spaces and non-ASCII text cannot change the route
or truncate a key. Segments must be non-empty, at most `MAX_SEGMENT_BYTES`
bytes of UTF-8, and not `.` or `..` (HTTP clients and proxies remove such
dot segments from a path, which would silently address another resource).
"""

from __future__ import annotations

import math
import os
import ssl
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import orjson

from .codec import encode
from .errors import (
    AuthError,
    ConfigError,
    NotFoundError,
    RemoteError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    ValidationError,
)
from .transport import KeepAliveTransport

__all__ = ["ERROR_BODY_CHARS", "MAX_SEGMENT_BYTES", "RedDBClient", "client_for", "is_ambiguous", "remote_end"]

MAX_SEGMENT_BYTES: Final = 1024
"""Longest namespace, key or stream name accepted, in bytes of UTF-8 (before percent-encoding)."""

ERROR_BODY_CHARS: Final = 200
"""Server error text is cut to this many characters in exception messages."""

TOKEN_ENV: Final = "REDDB_TOKEN"

_JSON_CONTENT: Final = {"Content-Type": "application/json"}
# Transport failures after which the server certainly did not receive the request.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_REDACTED: Final = "***"

_E = TypeVar("_E", bound=RemoteError)


class _Missing:
    """Type of the `kv_get` default sentinel (so `None` can be a real default)."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()


class _Answer:
    """What the error table needs of an HTTP answer, from httpx or from the direct transport."""

    __slots__ = ("content", "method", "path", "status_code")

    def __init__(self, status_code: int, content: bytes, method: str, path: str) -> None:
        self.status_code = status_code
        self.content = content
        self.method = method
        self.path = path


def is_ambiguous(exc: BaseException) -> bool:
    """True when the failed request may have reached RedDB (so an append may have landed).

    Errors raised by `RedDBClient` carry the answer in `exc.ambiguous`; any other
    exception is treated as ambiguous, the safe assumption for a non-idempotent append.
    """
    return bool(getattr(exc, "ambiguous", True))


def _remote_error(cls: type[_E], message: str, *, status: int | None, ambiguous: bool) -> _E:
    err = cls(message, status=status)
    # errors.py is shared; the flag is an instance attribute read through is_ambiguous().
    err.ambiguous = ambiguous  # type: ignore[attr-defined]
    return err


def _positive_seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return seconds


def _normalise_url(url: object) -> str:
    """`scheme://host[:port][/prefix]` without trailing slashes; ConfigError for anything else.

    Messages never echo the userinfo or the query, which could hold secrets.
    """
    if not isinstance(url, str):
        raise ConfigError(f"RedDB URL must be a str, got {type(url).__name__}")
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"RedDB URL cannot be parsed: {exc}") from None
    if "@" in parts.netloc:
        raise ConfigError(
            "RedDB URL must not contain credentials (user:password@host)",
            hint=f"put the token in {TOKEN_ENV}; it is sent in the Authorization header only",
        )
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError("RedDB URL must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError("RedDB URL has no host")
    shown = f"{scheme}://{parts.netloc}{parts.path}"
    if "?" in url or "#" in url:
        raise ConfigError(
            f"RedDB URL must not contain a query string or fragment: {shown}?...",
            hint=f"put the token in {TOKEN_ENV}, never in the URL",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"RedDB URL has an invalid port: {exc}") from None
    base = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    try:
        httpx.URL(base)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"invalid RedDB URL {base!r}: {exc}") from None
    return base


def _check_token(token: object) -> str | None:
    """The token, or None when unset; ConfigError (never quoting it) if it cannot go in a header."""
    if token is None:
        token = os.environ.get(TOKEN_ENV)
    if token is None or token == "":
        return None
    if not isinstance(token, str):
        raise ConfigError(f"the RedDB token must be a str, got {type(token).__name__}")
    if any(not (32 <= ord(c) < 127) for c in token) or token != token.strip():
        raise ConfigError(
            "the RedDB token contains characters not allowed in an HTTP header "
            "(control characters, non-ASCII, or leading/trailing spaces)",
            hint=f"check {TOKEN_ENV} for a stray newline",
        )
    return token


def _segment(value: object, what: str) -> str:
    """Percent-encode one path segment; ValidationError before any request for a bad one."""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValidationError(f"{what} must not be empty")
    if value in (".", ".."):
        raise ValidationError(f"{what} must not be {value!r}: a dot segment is removed from URL paths")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{what} is not valid Unicode (lone surrogate): {value[:40]!r}") from None
    if len(raw) > MAX_SEGMENT_BYTES:
        raise ValidationError(
            f"{what} is {len(raw)} bytes of UTF-8, over the limit of {MAX_SEGMENT_BYTES}: {value[:40]!r}..."
        )
    return quote(raw, safe="")


def _raw_body(body: object) -> bytes:
    if isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    if not isinstance(body, bytes):
        raise ValidationError(f"body must be JSON bytes, got {type(body).__name__}")
    if not body:
        raise ValidationError("body must not be empty: it must be one encoded JSON value")
    return body


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class RedDBClient:
    """A synchronous, thread-safe client for one RedDB server and namespace.

    `token=None` reads `REDDB_TOKEN` from the environment (empty means unset).
    Timeouts are in seconds and must be finite and > 0. `verify` is True (system
    CA bundle), False, a CA bundle path, or an `ssl.SSLContext`. `transport`
    replaces the network (tests inject faults with `httpx.MockTransport`); with it,
    `verify` and `max_connections` do not apply.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        namespace: str = "dspy",
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        verify: bool | str | ssl.SSLContext = True,
        max_connections: int = 16,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._url = _normalise_url(url)
        self._token = _check_token(token)
        ns = _segment(namespace, "namespace")
        self._namespace = namespace
        connect = _positive_seconds(connect_timeout, "connect_timeout")
        read = _positive_seconds(read_timeout, "read_timeout")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError(f"max_connections must be an int >= 1, got {max_connections!r}")
        if isinstance(verify, str):  # httpx 0.28 deprecates path strings: build the context here
            try:
                verify = ssl.create_default_context(cafile=verify)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load the CA bundle for RedDB TLS verification: {exc}") from None
        elif not isinstance(verify, (bool, ssl.SSLContext)):
            raise ConfigError(f"verify must be a bool, a CA bundle path or an ssl.SSLContext, not {verify!r}")
        headers = {"Accept": "application/json", "User-Agent": "reddb-engine"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        self._kv_prefix = f"{self._url}/api/kv/{ns}/"
        self._stream_prefix = f"{self._url}/api/streams/{ns}/"
        self._closed = False
        # plain http through KeepAliveTransport: requests go straight to it as prebuilt bytes
        self._direct = transport if isinstance(transport, KeepAliveTransport) else None
        parts = urlsplit(self._url)
        self._origin_len = len(f"{parts.scheme}://{parts.netloc}")
        self._addr = (parts.hostname or "", parts.port or 80)
        self._timeouts = (connect, read)
        host = parts.netloc.encode("idna") if not parts.netloc.isascii() else parts.netloc.encode()
        fixed = {"Host": host.decode(), **headers}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("ascii")
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(connect=connect, read=read, write=read, pool=read),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            verify=verify,
            transport=transport,
            follow_redirects=False,  # a redirect must never carry the token elsewhere
        )

    @property
    def url(self) -> str:
        """The normalised base URL (no trailing slash, no credentials, no query)."""
        return self._url

    @property
    def namespace(self) -> str:
        """The RedDB namespace every key and stream of this client lives in."""
        return self._namespace

    def __repr__(self) -> str:
        token = "set" if self._token is not None else "unset"
        return f"RedDBClient(url={self._url!r}, namespace={self._namespace!r}, token={token})"

    # -- lifecycle ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool. Idempotent; later requests raise RemoteError."""
        self._closed = True
        self._http.close()

    def __enter__(self) -> RedDBClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- protocol -------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """`GET /health`: the server's status object (no token needed)."""
        resp = self._request("GET", f"{self._url}/health")
        doc = self._json(resp)
        if not isinstance(doc, dict):
            raise self._malformed(resp, "expected a JSON object")
        return doc

    def kv_put(self, key: str, value: Any) -> None:
        """Store `value` (any JSON value) under `key`; last write wins."""
        url = self._kv_prefix + _segment(key, "key")
        self._put(url, encode(value))

    def kv_put_raw(self, key: str, body: bytes | bytearray | memoryview) -> None:
        """Like `kv_put` for a value that is already encoded JSON bytes (sent verbatim)."""
        url = self._kv_prefix + _segment(key, "key")
        self._put(url, _raw_body(body))

    def kv_get(self, key: str, default: Any = _MISSING) -> Any:
        """The value stored under `key`; a stored JSON null returns None.

        A missing key raises NotFoundError, or returns `default` when one is given.
        Some servers (the FastAPI one) answer 404 for a stored null: do not rely on
        storing null. A 404 that does not come from the key-value route (empty or
        "Not Found" body: wrong base URL) raises RemoteError even with a default,
        so a misconfiguration never reads as "missing".
        """
        url = self._kv_prefix + _segment(key, "key")
        resp = self._request("GET", url, missing_ok=True)
        if resp.status_code == 404:
            if default is _MISSING:
                raise NotFoundError(f"RedDB key {key!r} not found in namespace {self._namespace!r}")
            return default
        return self._json(resp)

    def kv_delete(self, key: str) -> None:
        """Delete `key`; deleting a missing key is not an error."""
        url = self._kv_prefix + _segment(key, "key")
        self._json(self._request("DELETE", url))

    def append(self, stream: str, value: Any) -> int:
        """Append `value` to `stream` and return the offset the server assigned.

        Not idempotent: after an error with `ambiguous=True` the value may have landed.
        """
        return self.append_raw(stream, encode(value))

    def append_raw(self, stream: str, body: bytes | bytearray | memoryview) -> int:
        """Like `append` for a value that is already encoded JSON bytes (sent verbatim)."""
        url = f"{self._stream_prefix}{_segment(stream, 'stream')}/append"
        resp = self._request("POST", url, content=_raw_body(body), headers=_JSON_CONTENT)
        doc = self._json(resp)
        offset = _int(doc.get("offset")) if isinstance(doc, dict) else None
        if offset is None or offset < 0:
            raise self._malformed(resp, "no integer offset in the append answer")
        return offset

    def read(self, stream: str, start: int = 0, count: int = 100) -> list[tuple[int, Any]]:
        """Up to `count` entries of `stream` with offset >= `start`, ascending, as (offset, value).

        Servers may return fewer than `count` (the reference server clamps it to
        1..1000); use `iter_stream` to read a whole stream. Unknown streams read as [].
        """
        url = f"{self._stream_prefix}{_segment(stream, 'stream')}/read"
        if _int(start) is None or start < 0:
            raise ValidationError(f"start must be an int >= 0, got {start!r}")
        if _int(count) is None or count < 1:
            raise ValidationError(f"count must be an int >= 1, got {count!r}")
        resp = self._request("GET", url, params={"start": start, "count": count})
        doc = self._json(resp)
        if not isinstance(doc, list):
            raise self._malformed(resp, "expected a JSON array of entries")
        rows: list[tuple[int, Any]] = []
        last = start - 1
        for entry in doc:
            offset = _int(entry.get("offset")) if isinstance(entry, dict) else None
            if offset is None or "value" not in entry:
                raise self._malformed(resp, "an entry is not {offset: int, value: ...}")
            if offset <= last:  # also guards iter_stream against looping forever
                raise self._malformed(resp, f"offsets not ascending from start={start}")
            rows.append((offset, entry["value"]))
            last = offset
        return rows

    def iter_stream(self, stream: str, start: int = 0, page: int = 1000) -> Iterator[tuple[int, Any]]:
        """Every entry of `stream` from `start` on, paging `page` entries per request.

        The next page starts after the last offset received; paging stops at the
        first empty page, so a server that returns fewer rows than asked is fine.
        Arguments are checked here, before the first request.
        """
        _segment(stream, "stream")
        if _int(start) is None or start < 0:
            raise ValidationError(f"start must be an int >= 0, got {start!r}")
        if _int(page) is None or page < 1:
            raise ValidationError(f"page must be an int >= 1, got {page!r}")
        return self._pages(stream, start, page)

    def _pages(self, stream: str, start: int, page: int) -> Iterator[tuple[int, Any]]:
        while True:
            rows = self.read(stream, start, page)
            if not rows:
                return
            yield from rows
            start = rows[-1][0] + 1

    # -- the one table: requests, statuses and transport failures -> typed errors -------------------

    def _put(self, url: str, body: bytes) -> None:
        self._json(self._request("PUT", url, content=body, headers=_JSON_CONTENT))

    def _request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, int] | None = None,
        missing_ok: bool = False,
    ) -> _Answer:
        """Send one request; return a 2xx answer (or a key-value 404 when `missing_ok`)."""
        if self._closed:
            raise _remote_error(RemoteError, "the RedDB client is closed", status=None, ambiguous=False)
        try:
            if self._direct is not None:
                resp = self._send_direct(method, url, content, params)
            else:
                r = self._http.request(method, url, content=content, headers=headers, params=params)
                target = r.request.url.raw_path.decode("ascii", "replace")
                resp = _Answer(r.status_code, r.content, method, target)
        except httpx.HTTPError as exc:
            raise self._transport_error(method, url, exc) from exc
        except RuntimeError:  # httpx refuses a client closed by another thread meanwhile
            if not self._closed:
                raise
            raise _remote_error(
                RemoteError, "the RedDB client is closed", status=None, ambiguous=False
            ) from None
        status = resp.status_code
        if 200 <= status < 300:
            return resp
        path = resp.path
        if status == 404 and missing_ok and self._is_missing_key(resp):
            return resp
        where = f"RedDB {method} {path}: HTTP {status}"
        detail = self._detail(resp)
        if status == 401:
            state = "was rejected" if self._token is not None else "is not set"
            raise _remote_error(
                AuthError, f"{where}: the token {state}: {detail}", status=401, ambiguous=False
            )
        if status == 404:
            raise _remote_error(
                RemoteError,
                f"{where}: no such route, check the RedDB URL {self._url!r}: {detail}",
                status=404,
                ambiguous=False,
            )
        # 3xx/4xx: refused before being applied; 5xx: it may have been applied before the failure.
        raise _remote_error(RemoteError, f"{where}: {detail}", status=status, ambiguous=status >= 500)

    def _send_direct(
        self, method: str, url: str, content: bytes | None, params: dict[str, int] | None
    ) -> _Answer:
        """The plain-http path: the whole request as one byte string through KeepAliveTransport."""
        assert self._direct is not None
        target = url[self._origin_len :] or "/"
        if params:
            target += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        head = f"{method} {target} HTTP/1.1\r\n".encode("ascii") + self._head
        if content is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(content)
        verb = method.encode("ascii")
        reply = self._direct.exchange(
            self._addr,
            verb,
            head + b"\r\n" + (content or b""),
            connect_timeout=self._timeouts[0],
            read_timeout=self._timeouts[1],
        )
        return _Answer(reply.status, reply.content, method, target)

    def _transport_error(self, method: str, url: str, exc: httpx.HTTPError) -> RemoteError:
        path = url[len(self._url) :] or "/"
        text = self._redact(str(exc)) or type(exc).__name__
        ambiguous = not isinstance(exc, _NOT_SENT)
        if isinstance(exc, httpx.TimeoutException):
            phase = {
                httpx.ConnectTimeout: "connecting",
                httpx.PoolTimeout: "waiting for a free connection",
                httpx.WriteTimeout: "sending the request",
            }.get(type(exc), "waiting for the answer")
            message = f"RedDB {method} {path}: timed out {phase} ({self._url}): {text}"
            return _remote_error(RemoteTimeoutError, message, status=None, ambiguous=ambiguous)
        if isinstance(exc, httpx.TransportError):
            message = f"RedDB {method} {path}: cannot reach {self._url}: {type(exc).__name__}: {text}"
            return _remote_error(RemoteUnavailableError, message, status=None, ambiguous=ambiguous)
        # DecodingError, TooManyRedirects, ...: an answer arrived but cannot be used.
        message = f"RedDB {method} {path}: unusable answer: {type(exc).__name__}: {text}"
        return _remote_error(RemoteError, message, status=None, ambiguous=True)

    @staticmethod
    def _is_missing_key(resp: _Answer) -> bool:
        """A key-value 404 carries a JSON error object; a routing 404 is empty, text or FastAPI's default."""
        try:
            doc = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            return False
        return isinstance(doc, dict) and doc.get("detail") != "Not Found"

    def _json(self, resp: _Answer) -> Any:
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            raise self._malformed(resp, "not JSON") from None

    @staticmethod
    def _malformed(resp: _Answer, why: str) -> RemoteError:
        """A 2xx answer we cannot use: the request was processed, so an append may have landed."""
        message = f"RedDB {resp.method} {resp.path}: malformed response: {why}"
        return _remote_error(RemoteError, message, status=resp.status_code, ambiguous=True)

    def _detail(self, resp: _Answer) -> str:
        """The server's error text for a message: `error`/`detail` of a JSON body, else the raw body."""
        body = resp.content
        if not body:
            return "(empty body)"
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            text = body.decode("utf-8", "replace")
        else:
            found = doc.get("error", doc.get("detail", doc)) if isinstance(doc, dict) else doc
            text = found if isinstance(found, str) else orjson.dumps(found).decode()
        text = " ".join(self._redact(text).split())
        if len(text) > ERROR_BODY_CHARS:
            text = text[:ERROR_BODY_CHARS] + "..."
        return text

    def _redact(self, text: str) -> str:
        """Remove the token from server-supplied text (a server or proxy might echo headers)."""
        if self._token is not None and self._token in text:
            return text.replace(self._token, _REDACTED)
        return text


def client_for(
    url: str,
    *,
    token: str | None = None,
    namespace: str = "dspy",
    connect_timeout: float = 2.0,
    read_timeout: float = 10.0,
    max_connections: int = 16,
) -> RedDBClient:
    """The engine's RedDBClient for `url`: a plain-http URL gets KeepAliveTransport's direct path
    (a quarter of httpx's client CPU per request), an https URL httpx with TLS verification."""
    plain = isinstance(url, str) and url.strip().lower().startswith("http://")
    return RedDBClient(
        url,
        token=token,
        namespace=namespace,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_connections=max_connections,
        transport=KeepAliveTransport() if plain else None,
    )


def remote_end(client: RedDBClient, stream: str) -> int:
    """The offset after the last row of a remote stream (0 when empty), found by probing `read`.

    Two requests for a stream under 1,000 rows; about 30 for a million (gallop, then bisect).
    """
    read = client.read
    rows = read(stream, 0, 1000)
    if not rows:
        return 0
    lo, step = rows[-1][0], 1024  # lo: an offset that exists
    while True:
        nxt = read(stream, lo + 1, 1)
        if not nxt:
            return lo + 1
        lo = nxt[0][0]
        probe = read(stream, lo + step, 1)
        if not probe:
            break
        lo, step = probe[0][0], step * 8
    hi = lo + step  # nothing at or after hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        got = read(stream, mid, 1)
        if got:
            lo = got[0][0]
        else:
            hi = mid
    return lo + 1
