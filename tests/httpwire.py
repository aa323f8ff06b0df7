"""Reading raw HTTP/1.1 messages off a socket, for the tests' scripted servers and proxies."""

from __future__ import annotations

import socket


def read_message(sock: socket.socket, buf: bytes = b"") -> tuple[bytes | None, bytes]:
    """(one whole message: head + Content-Length body, bytes read past it); (None, b"") at EOF.

    `buf` holds bytes already read from the socket (what the previous call returned past its message).
    """
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return head + b"\r\n\r\n" + rest[:length], rest[length:]
