"""Per-key limits: request rate (token bucket) and concurrent downloads, per replica.

Limits are kept in this process: with N replicas behind a balancer a key gets up to N
times the configured figures. That bounds what one leaked or runaway key can take from
one replica, which is what the limits are for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tunevault.errors import RateLimited


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

    def charge(self, key_id: str) -> None:
        """Take one request's token, or refuse with the wait until the next one."""
        if not self.per_minute:
            return
        now = time.monotonic()
        rate = self.per_minute / 60.0
        b = self._buckets.setdefault(key_id, _Bucket(float(self.per_minute), now))
        b.tokens = min(float(self.per_minute), b.tokens + (now - b.stamp) * rate)
        b.stamp = now
        if b.tokens < 1:
            wait = max(1, round((1 - b.tokens) / rate + 0.5))
            raise RateLimited(
                f"this API key is over its limit of {self.per_minute} requests per minute",
                headers={"Retry-After": str(wait)},
            )
        b.tokens -= 1

    @contextmanager
    def download(self, key_id: str) -> Iterator[None]:
        """Hold one of the key's concurrent download slots while the body is sent."""
        active = self._downloads.get(key_id, 0)
        if self.max_downloads and active >= self.max_downloads:
            raise RateLimited(
                f"this API key already has {active} downloads in progress "
                f"(limit {self.max_downloads}); retry when one ends",
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
