"""kill -9 of a writer at random moments loses nothing it acknowledged and leaves no torn record."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
CYCLES = int(os.environ.get("ENGINE_CRASH_CYCLES", "25"))


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.procs", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _verify(path: Path, stream: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tests.integration.procs", "verify", str(path), stream],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return orjson.loads(out.stdout)


def test_sigkill_during_writes_loses_no_acknowledged_record(tmp_path):
    rng = random.Random(1234)
    path = tmp_path / "store"
    acked: dict[int, int] = {}  # offset -> seq
    next_seq = 0
    for cycle in range(CYCLES):
        proc = _spawn("writer", str(path), "events", str(next_seq), "1000000", f"c{cycle}")
        # wait until it is really writing, then kill it at a random moment
        first = proc.stdout.readline()
        assert first, proc.stderr.read()
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        for line in [first, *rest.splitlines()]:
            if line.strip():
                off, seq = map(int, line.split())
                acked[off] = seq
        state = _verify(path, "events")
        rows = state["rows"]
        # contiguous offsets, every row decodes to a whole record
        assert [r[0] for r in rows] == list(range(state["length"]))
        for _, value in rows:
            assert set(value) == {"seq", "tag", "pad"}
            assert value["pad"] == "x" * (value["seq"] % 97)
        by_offset = {off: value["seq"] for off, value in rows}
        # every acknowledged record is there, at its offset, intact
        for off, seq in acked.items():
            assert by_offset.get(off) == seq, f"cycle {cycle}: acknowledged offset {off} lost"
        # sequence numbers never repeat or go backwards
        seqs = [value["seq"] for _, value in rows]
        assert seqs == sorted(set(seqs))
        next_seq = (seqs[-1] + 1) if seqs else next_seq
    assert len(acked) >= CYCLES
