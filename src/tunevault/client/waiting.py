"""Waiting for an archive the server is still building (409 `archive_not_ready`).

The server's `Retry-After` says when to look again; it is honoured, as is its estimate of
the build's end (`Tunevault-Build-Eta`) when that comes sooner, but never beyond
`POLL_CAP` (a build that ends early is noticed within that: the wait adds at most it, as
bench.first_hour_bench measures) nor below `POLL_FLOOR`. What
the server says about the build (its message: state, progress, estimate) is shown on
stderr while waiting: one line redrawn in place on a terminal, else a line whenever the
message changes.
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import Protocol, TextIO

from tunevault.errors import ArchiveNotReady

POLL_CAP = 1.0
POLL_FLOOR = 0.1
_RETRY_HINT = re.compile(r"[;,.]?\s*retry in \d+(\.\d+)?\s*s(econds)?\.?\s*$", re.IGNORECASE)


class WaitNotice(Protocol):
    def waiting(self, message: str, next_check: float, waited: float, limit: float) -> None: ...
    def done(self, waited: float, *, ready: bool) -> None: ...


def poll_pause(e: ArchiveNotReady) -> float:
    try:
        after = float(e.headers.get("Retry-After", POLL_CAP))
    except ValueError:
        after = POLL_CAP  # an HTTP date: look again soon
    with contextlib.suppress(KeyError, ValueError):  # no estimate: an older server, or a
        after = min(after, float(e.headers["Tunevault-Build-Eta"]))  # queue it cannot size
    return min(max(after, POLL_FLOOR), POLL_CAP)


def not_ready_after(e: ArchiveNotReady, limit: float) -> ArchiveNotReady:
    """The error `download` ends with when --wait runs out: what the server said, and the fix."""
    waited = "not waiting (--wait 0)" if limit <= 0 else f"still not ready after {limit:g} s"
    return ArchiveNotReady(
        f"{server_state(e.message)}; {waited}: run the same command again later, "
        "or pass a longer --wait",
        param=e.param,
        headers=e.headers,
    )


def server_state(message: str) -> str:
    """The server's message without its own 'retry in N s' (the client says when)."""
    return _RETRY_HINT.sub("", message).strip() or "the archive is being built"


class WaitLine:
    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = ""

    def waiting(self, message: str, next_check: float, waited: float, limit: float) -> None:
        state = server_state(message)
        line = (
            f"{self.label}: {state}; checking again in {next_check:.1f} s "
            f"(waited {waited:.0f} s of {limit:g} s)"
        )
        if self.tty:
            self.stream.write(f"\r{line}\x1b[K")
        elif state != self._last:
            self.stream.write(line + "\n")
        self._last = state
        self.stream.flush()

    def done(self, waited: float, *, ready: bool) -> None:
        """The wait is over: say so when the archive is ready; else only end the line,
        for the error that follows."""
        if ready:
            line = f"{self.label}: ready after waiting {waited:.1f} s"
            self.stream.write(f"\r{line}\x1b[K\n" if self.tty else line + "\n")
        elif self.tty:
            self.stream.write("\n")
        self.stream.flush()
