"""`engine serve`: a RedDB-compatible HTTP server over the engine's LMDB tier.

It honours the storage part of the RedDB protocol (shared/reddb-protocol.md)
exactly as the reference Rust server does: the same routes, status codes,
bodies, `count` clamping, and the same order of checks (path, then content
type, body size and JSON syntax, and only then the token).

Why it is shaped this way:
- A plain ASGI callable served by uvicorn, routed on `scope["raw_path"]`.
  Starlette's router (like FastAPI's) matches the *decoded* path, so a key
  `a%2Fb` would split into two segments; axum routes on the raw path and then
  percent-decodes each segment, and so do we. Five fixed routes need no
  framework, and every layer left out is per-request time saved.
- One writer thread (engine.groupwriter) owns every write transaction and commits whatever
  requests arrived while the previous commit was fsyncing (group commit):
  the event loop keeps parsing HTTP during the fsync, and N concurrent
  appends cost one fsync, not N. LMDB serialises writers (also across
  processes), and `LocalStore.append` takes the next offset inside the
  transaction, so offsets stay contiguous from 0 per (namespace, stream).
- Reads run inline on the event loop: an LMDB read transaction is a few
  microseconds and never waits for the writer (MVCC).
- Values are stored as the request's JSON bytes (validated, surrounding
  whitespace stripped) and returned verbatim; a stream read concatenates the
  stored bytes into the JSON array without decoding them.
- uvicorn is imported only when a server starts, so `import engine` never
  needs the `reddb-engine[server]` extra. The admin token is compared in
  constant time and never printed or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import orjson

from .errors import ConfigError, EngineError
from .groupwriter import APPEND, DELETE, PUT, GroupWriter
from .local import LocalStore

__all__ = ["DEFAULT_MAX_BODY_BYTES", "RedDBApp", "build_app", "main", "serve", "storage_name"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

VERSION = "1.0.0"
TOKEN_ENV = "REDDB_ADMIN_TOKEN"
DEFAULT_MAX_BODY_BYTES = 16 << 20
DEFAULT_COUNT = 100
MAX_COUNT = 1000
_I64 = 1 << 63
_MAX_NAME_BYTES = 400  # LMDB keys are at most 511 bytes; longer names are hashed

_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"
_NOT_FOUND = b'{"ok":false,"error":"not found"}'
_UNAUTHORIZED = b'{"ok":false,"error":"unauthorized"}'
_INT_RE = re.compile(r"[+-]?[0-9]+")
_JSON_WS = b" \t\r\n"

_ALLOWED = {"kv": ("GET", "HEAD", "PUT", "DELETE"), "append": ("POST",), "read": ("GET", "HEAD")}


def storage_name(namespace: str, name: str) -> str:
    """The LocalStore key or stream name that holds RedDB's (namespace, key) or (namespace, stream).

    `namespace \\x1f name`, with `%` and `\\x1f` escaped in the namespace so that no two pairs
    share a name; names too long for an LMDB key become `\\x1e` + a 256-bit BLAKE2b hex digest
    (they never contain `\\x1f`, so they cannot meet an unhashed name).
    """
    if "\x1f" in namespace or "%" in namespace:
        namespace = namespace.replace("%", "%25").replace("\x1f", "%1F")
    full = f"{namespace}\x1f{name}"
    if len(full) * 4 > _MAX_NAME_BYTES and len(full.encode()) > _MAX_NAME_BYTES:
        return "\x1e" + hashlib.blake2b(full.encode(), digest_size=32).hexdigest()
    return full


class _Disconnected(Exception):
    """The client went away while we were reading its body."""


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return bytes(v)
    return None


def _is_json_type(value: bytes | None) -> bool:
    # axum's rule: application/json or application/<anything>+json, parameters allowed
    if value is None:
        return False
    kind, _, sub = value.split(b";", 1)[0].strip().lower().partition(b"/")
    return kind == b"application" and (sub == b"json" or sub.endswith(b"+json"))


def _decode_segment(raw: bytes) -> str | None:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _query_ints(query: bytes) -> tuple[int, int] | str:
    """(start, count) from a read's query string, or the error text for a 400."""
    seen: dict[str, int] = {}
    for name, raw in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name not in ("start", "count"):
            continue
        if name in seen:
            return f"duplicate field `{name}`"
        if not _INT_RE.fullmatch(raw) or not -_I64 <= int(raw) < _I64:
            return f"{name}: invalid digit found in string or number too large: {raw!r}"
        seen[name] = int(raw)
    count = min(max(seen.get("count", DEFAULT_COUNT), 1), MAX_COUNT)
    return max(seen.get("start", 0), 0), count


async def _respond(
    send: Send, status: int, body: bytes = b"", content_type: bytes | None = _JSON, allow: bytes | None = None
) -> None:
    headers = [(b"content-length", b"%d" % len(body))]
    if body and content_type is not None:
        headers.append((b"content-type", content_type))
    if allow is not None:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RedDBApp:
    """The ASGI application: the RedDB storage routes over one LocalStore."""

    def __init__(
        self,
        store: LocalStore,
        *,
        admin_token: str | None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        owns_store: bool = True,
    ) -> None:
        if admin_token == "":
            raise ConfigError("the admin token must not be empty", hint="pass None to turn auth off")
        if max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.store = store
        self.max_body_bytes = max_body_bytes
        self._expected = None if admin_token is None else b"Bearer " + admin_token.encode()
        self._owns_store = owns_store
        self._writer: GroupWriter | None = None
        self._writer_lock = threading.Lock()

    @property
    def auth_enabled(self) -> bool:
        """True when requests to the data routes need the admin token."""
        return self._expected is not None

    def __repr__(self) -> str:
        return f"RedDBApp(path={self.store.path!r}, auth_enabled={self.auth_enabled})"

    def close(self) -> None:
        """Commit queued writes, stop the writer thread and close the store (idempotent)."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        if self._owns_store:
            self.store.close()

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                await self._http(scope, receive, send)
            except _Disconnected:
                pass
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._get_writer()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _get_writer(self) -> GroupWriter:
        writer = self._writer
        if writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = GroupWriter(self.store, asyncio.get_running_loop())
                writer = self._writer
        return writer

    async def _write(self, op: int, name: str, value: bytes = b"") -> Any:
        return await self._get_writer().submit(op, name, value)

    def _authorized(self, scope: Scope) -> bool:
        if self._expected is None:
            return True
        got = _header(scope, b"authorization")
        return got is not None and hmac.compare_digest(got, self._expected)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") or scope["path"].encode()
        method = scope["method"]
        parts = raw.split(b"/")
        n = len(parts)
        if parts[0] or n < 2:
            return await _respond(send, 404)
        if (n == 2 and parts[1] == b"health") or (n == 3 and parts[1] == b"api" and parts[2] == b"health"):
            if method not in ("GET", "HEAD"):
                return await _respond(send, 405, allow=b"GET,HEAD")
            return await self._health(send)
        if n == 5 and parts[1] == b"api" and parts[2] == b"kv" and parts[3] and parts[4]:
            route = "kv"
        elif (
            n == 6
            and parts[1] == b"api"
            and parts[2] == b"streams"
            and parts[3]
            and parts[4]
            and parts[5] in (b"append", b"read")
        ):
            route = parts[5].decode()
        else:
            return await _respond(send, 404)
        allowed = _ALLOWED[route]
        if method not in allowed:
            return await _respond(send, 405, allow=",".join(allowed).encode())
        namespace = _decode_segment(parts[3])
        name = _decode_segment(parts[4])
        if namespace is None or name is None:
            return await _respond(send, 400, b"Invalid URL: path segment is not valid UTF-8", _TEXT)
        try:
            if route == "kv":
                await self._kv(scope, receive, send, method, namespace, name)
            elif route == "append":
                await self._append(scope, receive, send, namespace, name)
            else:
                await self._read(scope, send, namespace, name)
        except EngineError as exc:
            body = orjson.dumps({"ok": False, "error": f"database error: {exc}"})
            await _respond(send, 500, body)

    async def _health(self, send: Send) -> None:
        body = orjson.dumps(
            {
                "ok": True,
                "service": "reddb",
                "version": VERSION,
                "timestamp": time.time(),
                "data_dir": self.store.path,
                "auth_enabled": self.auth_enabled,
            }
        )
        await _respond(send, 200, body)

    async def _json_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The validated JSON body; None after answering 415, 413 or 400 (all before auth, like axum)."""
        if not _is_json_type(_header(scope, b"content-type")):
            await _respond(send, 415, b"Expected request with `Content-Type: application/json`", _TEXT)
            return None
        body = await self._read_body(scope, receive)
        if body is None:
            await _respond(send, 413, b"Failed to buffer the request body: length limit exceeded", _TEXT)
            return None
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            msg = f"Failed to parse the request body as JSON: {exc}".encode()
            await _respond(send, 400, msg, _TEXT)
            return None
        return body.strip(_JSON_WS)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole request body, or None as soon as it is over the limit (the rest is not read)."""
        limit = self.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _kv(self, scope: Scope, receive: Receive, send: Send, method: str, ns: str, key: str) -> None:
        if method == "PUT":
            body = await self._json_body(scope, receive, send)
            if body is None:
                return
            if not self._authorized(scope):
                return await _respond(send, 401, _UNAUTHORIZED)
            await self._write(PUT, storage_name(ns, key), body)
        else:
            if not self._authorized(scope):
                return await _respond(send, 401, _UNAUTHORIZED)
            if method == "DELETE":
                await self._write(DELETE, storage_name(ns, key))
            else:
                value = self.store.kv_get(storage_name(ns, key))
                if value is None:
                    return await _respond(send, 404, _NOT_FOUND)
                return await _respond(send, 200, value)
        await _respond(send, 200, orjson.dumps({"ok": True, "namespace": ns, "key": key}))

    async def _append(self, scope: Scope, receive: Receive, send: Send, ns: str, stream: str) -> None:
        body = await self._json_body(scope, receive, send)
        if body is None:
            return
        if not self._authorized(scope):
            return await _respond(send, 401, _UNAUTHORIZED)
        offset = await self._write(APPEND, storage_name(ns, stream), body)
        reply = {"ok": True, "namespace": ns, "stream": stream, "offset": offset}
        await _respond(send, 200, orjson.dumps(reply))

    async def _read(self, scope: Scope, send: Send, ns: str, stream: str) -> None:
        parsed = _query_ints(scope.get("query_string", b""))
        if isinstance(parsed, str):
            return await _respond(send, 400, f"Failed to deserialize query string: {parsed}".encode(), _TEXT)
        if not self._authorized(scope):
            return await _respond(send, 401, _UNAUTHORIZED)
        start, count = parsed
        rows = self.store.read(storage_name(ns, stream), start, count)
        body = b"[" + b",".join([b'{"offset":%d,"value":%b}' % (off, value) for off, value in rows]) + b"]"
        await _respond(send, 200, body)


def build_app(
    path: str,
    *,
    admin_token: str | None,
    durable: bool = True,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> RedDBApp:
    """A RedDB-compatible ASGI app over a LocalStore at `path` (created if missing).

    `admin_token=None` turns auth off. `durable=False` skips the fsync per commit (a process
    crash loses nothing, an OS crash may lose the last commits). Call `app.close()` (or let the
    ASGI lifespan shutdown do it) to commit queued writes and close the store.
    """
    if admin_token == "":
        raise ConfigError("the admin token must not be empty", hint="pass None to turn auth off")
    store = LocalStore(path, durable=durable)
    try:
        return RedDBApp(store, admin_token=admin_token, max_body_bytes=max_body_bytes)
    except BaseException:
        store.close()
        raise


def _import_uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigError(
            f"the RedDB-compatible server needs uvicorn, which is not installed ({exc})",
            hint="pip install 'reddb-engine[server]'",
        ) from None
    return uvicorn


def serve(
    path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    admin_token: str | None = None,
    durable: bool = True,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    log_level: str = "warning",
    access_log: bool = False,
) -> None:
    """Serve the RedDB protocol on host:port until SIGTERM/SIGINT; the store is closed on the way out.

    Raises ConfigError when uvicorn is missing, StorageError/OSError when the data directory cannot
    be opened, and uvicorn's SystemExit(3) when the address cannot be bound.
    """
    uvicorn = _import_uvicorn()
    app = build_app(path, admin_token=admin_token, durable=durable, max_body_bytes=max_body_bytes)
    try:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http="auto",  # httptools when installed (faster), h11 otherwise
            loop="auto",  # uvloop when installed
            ws="none",
            lifespan="on",
            interface="asgi3",
            log_level=log_level,
            access_log=access_log,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=30,  # longer than clients' idle expiry (httpx: 5 s), so they close first
            timeout_graceful_shutdown=10,
        )
        server = uvicorn.Server(config)
        _run_with_clean_signals(server)
    finally:
        app.close()


def _run_with_clean_signals(server: Any) -> None:
    # uvicorn re-raises the signal it caught once it has shut down gracefully, which would
    # kill us before the store closes and exit with -15; our handler turns that re-raise (and a
    # signal that arrives before uvicorn installs its own) into "stop", and we return normally.
    if threading.current_thread() is not threading.main_thread():
        server.run()
        return

    def stop(signum: int, frame: Any) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.server` / `engine serve`: parse arguments and serve until stopped."""
    parser = argparse.ArgumentParser(
        prog="engine serve",
        description="A RedDB-compatible HTTP server over the engine's LMDB tier.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    parser.add_argument(
        "--path",
        default=os.environ.get("REDDB_DATA_DIR") or "reddb-data",
        help="data directory (default $REDDB_DATA_DIR or ./reddb-data)",
    )
    parser.add_argument(
        "--token-env",
        default=TOKEN_ENV,
        metavar="NAME",
        help=f"environment variable holding the admin token (default {TOKEN_ENV}); unset or empty: no auth",
    )
    parser.add_argument(
        "--no-durable",
        action="store_true",
        help="skip the fsync per commit (faster; an OS crash may lose data)",
    )
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, metavar="N")
    parser.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.add_argument("--access-log", action="store_true", help="log one line per request")
    args = parser.parse_args(argv)
    token = os.environ.get(args.token_env) or None
    print(
        f"engine serve: RedDB-compatible server on http://{args.host}:{args.port} "
        f"(data: {os.path.abspath(args.path)}, auth: {'on' if token else 'off'}, "
        f"durable: {'no' if args.no_durable else 'yes'})",
        file=sys.stderr,
        flush=True,
    )
    try:
        serve(
            args.path,
            host=args.host,
            port=args.port,
            admin_token=token,
            durable=not args.no_durable,
            max_body_bytes=args.max_body_bytes,
            log_level=args.log_level,
            access_log=args.access_log,
        )
    except (EngineError, OSError) as exc:
        print(f"engine serve: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # uvicorn exits this way (code 3) when it cannot bind or start
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:  # Ctrl-C before uvicorn took over the signals
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
