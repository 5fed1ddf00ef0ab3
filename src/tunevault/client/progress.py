"""A one-line progress bar on stderr: percent, bytes, speed and ETA, ten times a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 24
INTERVAL = 0.1


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def clock(seconds: float) -> str:
    s = int(seconds)
    minutes = f"{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 3600}:{minutes}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Bar:
    def __init__(self, label: str, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.stream = stream
        self.total = 0
        self.base = 0  # bytes present before this run: not counted in the speed
        self.began = 0.0
        self.shown = 0.0

    def start(self, total: int, done: int) -> None:
        self.total, self.base, self.began = total, done, time.monotonic()
        self.update(done)

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.shown < INTERVAL and done < self.total:
            return
        self.shown = now
        elapsed = max(now - self.began, 1e-6)
        speed = (done - self.base) / elapsed
        frac = done / self.total if self.total else 1.0
        filled = int(frac * WIDTH)
        eta = clock((self.total - done) / speed) if speed > 0 else "--:--"
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {frac * 100:5.1f}% "
            f"{human(done)}/{human(self.total)} {human(speed)}/s ETA {eta} \x1b[K"
        )
        self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
