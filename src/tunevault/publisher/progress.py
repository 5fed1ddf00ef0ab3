"""One status line (bytes done, rate, ETA) on a terminal; silence anywhere else."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tunevault.client.progress import human

REDRAW_S = 0.2


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = ""
        self.total = 0
        self.done = 0
        self._start = 0.0
        self._drawn = 0.0

    def start(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self._start = self._drawn = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._drawn >= REDRAW_S:
            self._drawn = now
            self._draw(now)

    def finish(self) -> None:
        if self.enabled and self.total:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self._start, 1e-6)
        left = max(self.total - self.done, 0)
        eta = f"ETA {left / rate:.0f} s" if rate > 0 and left else ""
        line = f"{self.label} {human(self.done)} / {human(self.total)}  {human(rate)}/s  {eta}"
        self.stream.write("\r" + line.ljust(78)[:120])
        self.stream.flush()
