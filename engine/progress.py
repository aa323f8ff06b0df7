"""A dependency-free progress bar for long CLI jobs (demo, import, export, sync, pull).

Draws on stderr at most ~10 times a second when stderr is a terminal; when it
is not (CI, pipes), prints one line at 25 % steps so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`with Progress(total, "writing") as p: p.advance(n)`."""

    def __init__(self, total: int | None, label: str, *, stream: TextIO | None = None, unit: str = "rows"):
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._next_step = 25

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def advance(self, n: int = 1) -> None:
        """Count `n` more units of work."""
        self.done += n
        now = time.perf_counter()
        if self._tty:
            if now - self._last_draw >= 0.1:
                self._last_draw = now
                self._draw(now, end="\r")
        elif self.total:
            pct = 100 * self.done // self.total
            if pct >= self._next_step and pct < 100:
                self._next_step = (pct // 25 + 1) * 25
                self._draw(now, end="\n")

    def _draw(self, now: float, end: str) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            text = f"{self.label:<18} [{bar:<30}] {self.done:>9,}/{self.total:,} {self.unit} {rate:>10,.0f}/s"
        else:
            text = f"{self.label:<18} {self.done:>9,} {self.unit} {rate:>10,.0f}/s"
        self.stream.write(text + end)
        self.stream.flush()

    def finish(self) -> None:
        """Draw the final state once."""
        self._draw(time.perf_counter(), end="\n")
