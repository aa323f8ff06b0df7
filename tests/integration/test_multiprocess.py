"""Several processes on one store: every record once, offsets contiguous, readers see new data live."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 4
PER_WRITER = 300


def _run(*args: str, **kw) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.procs", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_four_writers_one_stream(tmp_path):
    path = str(tmp_path / "shared")
    total = WRITERS * PER_WRITER
    # the watcher opens the store before any writer starts and must see their rows without reopening
    watcher = _run("watcher", path, "shared", str(total), "60")
    assert watcher.stdout.readline().strip() == "ready"
    writers = [
        _run("writer", path, "shared", str(w * 100_000), str(PER_WRITER), f"w{w}") for w in range(WRITERS)
    ]
    acked: dict[int, int] = {}
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        for line in out.splitlines():
            off, seq = map(int, line.split())
            assert off not in acked, f"offset {off} handed out twice"
            acked[off] = seq
    seen, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    report = orjson.loads(seen)
    assert report["seen"] == total
    assert report["last"][0][0] == total - 1

    verify = subprocess.run(
        [sys.executable, "-m", "tests.integration.procs", "verify", path, "shared"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = orjson.loads(verify.stdout)["rows"]
    assert [r[0] for r in rows] == list(range(total))
    assert sorted(acked) == list(range(total))
    for off, value in rows:
        assert acked[off] == value["seq"]
    seqs = [v["seq"] for _, v in rows]
    assert len(set(seqs)) == total
    for w in range(WRITERS):  # each writer's records keep their order
        mine = [s for s in seqs if w * 100_000 <= s < (w + 1) * 100_000]
        assert mine == list(range(w * 100_000, w * 100_000 + PER_WRITER))
