"""Small programs that integration tests run as separate processes (python -m tests.integration.procs ...)."""

from __future__ import annotations

import sys
import time

import orjson


def writer(path: str, stream: str, start_seq: int, count: int, tag: str) -> None:
    """Append records one transaction each; print `offset seq` only after the commit returned."""
    import engine

    eng = engine.open(path)
    out = sys.stdout
    for seq in range(start_seq, start_seq + count):
        off = eng.append(stream, {"seq": seq, "tag": tag, "pad": "x" * (seq % 97)})
        out.write(f"{off} {seq}\n")
        out.flush()
    eng.close()


def verify(path: str, stream: str) -> None:
    """Print the whole stream as JSON: [[offset, value], ...] (a fresh process, fresh environment)."""
    import engine

    eng = engine.open(path)
    rows = []
    start = 0
    while True:
        page = eng.read(stream, start, 1000)
        if not page:
            break
        rows.extend(page)
        start = page[-1][0] + 1
    sys.stdout.write(orjson.dumps({"length": eng.store.stream_length(stream), "rows": rows}).decode())
    eng.close()


def watcher(path: str, stream: str, target: int, timeout: float) -> None:
    """Open the store first, then poll until `target` rows are visible; print what was seen."""
    import engine

    eng = engine.open(path)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n = eng.store.stream_length(stream)
        if n >= target:
            break
        time.sleep(0.01)
    rows = eng.read(stream, max(0, n - 1), 1)
    sys.stdout.write(orjson.dumps({"seen": n, "last": rows}).decode() + "\n")
    eng.close()


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    if cmd == "writer":
        writer(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4])
    elif cmd == "verify":
        verify(rest[0], rest[1])
    elif cmd == "watcher":
        watcher(rest[0], rest[1], int(rest[2]), float(rest[3]))
    else:
        raise SystemExit(f"unknown command {cmd}")
