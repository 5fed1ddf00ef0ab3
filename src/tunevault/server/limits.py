"""Per-key limits: request rate (token bucket) and concurrent downloads, per replica.

Each key may carry its own figures (`tunevault keys create/limits`); a key without them
gets the server's defaults. Limits are kept in this process: with N replicas behind a
balancer a key gets up to N times its figures. That bounds what one leaked or runaway key
can take from one replica, which is what the limits are for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tunevault.errors import RateLimited
from tunevault.models import Principal


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class KeyLimits:
    per_minute: int  # 0: unlimited
    max_downloads: int  # 0: unlimited
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _downloads: dict[str, int] = field(default_factory=dict)

    def charge(self, who: Principal) -> None:
        """Take one request's token, or refuse with the wait until the next one."""
        per_minute = _own(who.limits.requests_per_minute, self.per_minute)
        if not per_minute:
            return
        key_id, now = who.key_id, time.monotonic()
        rate = per_minute / 60.0
        b = self._buckets.setdefault(key_id, _Bucket(float(per_minute), now))
        b.tokens = min(float(per_minute), b.tokens + (now - b.stamp) * rate)
        b.stamp = now
        if b.tokens < 1:
            wait = max(1, round((1 - b.tokens) / rate + 0.5))
            raise RateLimited(
                f"this API key is over its limit of {per_minute} requests per minute; an "
                "admin can raise it with `tunevault keys limits`",
                headers={"Retry-After": str(wait)},
            )
        b.tokens -= 1

    @contextmanager
    def download(self, who: Principal) -> Iterator[None]:
        """Hold one of the key's concurrent download slots while the body is sent."""
        key_id, limit = who.key_id, _own(who.limits.max_downloads, self.max_downloads)
        active = self._downloads.get(key_id, 0)
        if limit and active >= limit:
            raise RateLimited(
                f"this API key already has {active} downloads in progress "
                f"(limit {limit}); retry when one ends",
                headers={"Retry-After": "5"},
            )
        self._downloads[key_id] = active + 1
        try:
            yield
        finally:
            left = self._downloads[key_id] - 1
            if left:
                self._downloads[key_id] = left
            else:
                del self._downloads[key_id]


def _own(figure: int | None, default: int) -> int:
    return default if figure is None else figure
