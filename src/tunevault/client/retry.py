"""One retry policy for every request a client makes (downloads, listings, publishing).

A failure that may clear by itself (the server unreachable, a dropped connection, 429,
502/503/504) is retried after a pause that doubles up to a cap, or after the server's
`Retry-After` when it sends one (capped too). Each retry is announced at once on the
`tunevault` logger (stderr when nothing else is configured), e.g.
`cannot reach http://host:8000: connection refused; retrying in 2 s, 2/6`, so that no
command is silent while it waits. When the attempts run out the caller raises
`NetworkError` (client/http.py), the one "server unreachable" error.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from dataclasses import dataclass

log = logging.getLogger("tunevault.retry")
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Backoff:
    attempts: int = 6  # retries after the first try
    first: float = 0.5  # the first pause; doubled per consecutive failure
    cap: float = 8.0  # no pause is longer, whatever Retry-After says

    def pause(self, attempt: int, retry_after: str | None = None) -> float:
        """The pause before retry number `attempt` (1-based)."""
        pause: float = self.first * 2 ** (attempt - 1)
        if retry_after is not None:
            with contextlib.suppress(ValueError):  # an HTTP date: keep the backoff
                pause = max(float(retry_after), 0.0)
        return min(pause, self.cap)


def reason(e: BaseException) -> str:
    """A short human cause: 'connection refused', 'timed out', ..."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, TimeoutError | socket.timeout):
            return "timed out"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(e)).strip()
    return text or type(e).__name__


def where(url: str) -> str:
    """The origin of `url`: enough to say which server, never a presigned query."""
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]+)", url)
    return m.group(1) if m else url[:100]


def announce_unreachable(
    url: str, cause: BaseException, pause: float, attempt: int, attempts: int
) -> None:
    log.warning(
        "cannot reach %s: %s; retrying in %s s, %d/%d",
        where(url),
        reason(cause),
        _seconds(pause),
        attempt,
        attempts,
    )


def announce_lost(
    url: str, cause: BaseException, pause: float, attempt: int, attempts: int
) -> None:
    """A connection that worked and then failed (reset, cut, timed out mid-body)."""
    log.warning(
        "connection to %s failed: %s; retrying in %s s, %d/%d",
        where(url),
        reason(cause),
        _seconds(pause),
        attempt,
        attempts,
    )


def announce_status(url: str, status: int, pause: float, attempt: int, attempts: int) -> None:
    log.warning(
        "%s answered HTTP %d; retrying in %s s, %d/%d",
        where(url),
        status,
        _seconds(pause),
        attempt,
        attempts,
    )


def _seconds(s: float) -> str:
    return f"{s:.0f}" if s >= 1 else f"{s:.1f}"
