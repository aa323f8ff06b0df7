"""A null RedDB for benchmarks: it speaks the storage routes' happy path and stores nothing.

Appends get contiguous offsets per (namespace, stream) path, puts and deletes answer ok, reads answer
`[]`, and the health routes answer the reference body. It runs on uvloop with httptools' C parser and
one `transport.write` per response, so it costs the client next to nothing per request: a replication
benchmark against it measures the client alone, which bounds what any client can gain against a real
server. Never use it for anything that needs the data back.

Run: python benchmarks/nullserver.py PORT (binds 127.0.0.1 only; SIGTERM stops it).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from typing import Any

import httptools
import orjson
import uvloop

_HEALTH = orjson.dumps(
    {
        "ok": True,
        "service": "reddb",
        "version": "1.0.0",
        "timestamp": 0.0,
        "data_dir": "",
        "auth_enabled": False,
    }
)


class NullRedDB(asyncio.Protocol):
    """One connection: parse requests with httptools, answer each as soon as it is complete."""

    offsets: Counter[bytes] = Counter()

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.url = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        parts = path.split(b"/")
        if path in (b"/health", b"/api/health"):
            status, body = b"200 OK", _HEALTH
        elif method == b"POST" and len(parts) == 6 and parts[5] == b"append":
            offset = self.offsets[path]
            self.offsets[path] = offset + 1
            reply = {
                "ok": True,
                "namespace": parts[3].decode(),
                "stream": parts[4].decode(),
                "offset": offset,
            }
            status, body = b"200 OK", orjson.dumps(reply)
        elif method in (b"PUT", b"DELETE") and len(parts) == 5:
            status, body = (
                b"200 OK",
                orjson.dumps({"ok": True, "namespace": parts[3].decode(), "key": parts[4].decode()}),
            )
        elif method == b"GET" and len(parts) == 6 and parts[5] == b"read":
            status, body = b"200 OK", b"[]"
        else:
            status, body = b"404 Not Found", b'{"ok":false,"error":"not found"}'
        head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (
            status,
            len(body),
        )
        self.transport.write(head + body)


async def _serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(NullRedDB, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(_serve(int(sys.argv[1])))
