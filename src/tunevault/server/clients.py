"""Who the client is: the peer address, or the address a trusted proxy forwarded.

`Forwarded` (RFC 7239) and `X-Forwarded-For` are believed only from a peer inside
`trusted_proxies`, and then only up to the first hop that is not itself a trusted proxy:
anything further left was written by the client and proves nothing. The address found is
what the access log, the download audit and the per-client limit of failed
authentications use.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from aiohttp import web

from tunevault.errors import RateLimited

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Network = IPv4Network | IPv6Network
CLIENT = "tunevault.client"
TRUSTED = web.AppKey("trusted_proxies", tuple)
MAX_TRACKED = 100_000  # client buckets kept before full ones are forgotten


@functools.lru_cache(maxsize=4096)  # peers ask again and again: parse each once
def _address(text: str) -> IPv4Address | IPv6Address | None:
    """An IP from a peer, an X-Forwarded-For entry or a Forwarded `for=` value (which may
    carry a port, and brackets around IPv6); None for `unknown`, `_hidden` and garbage."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]  # IPv4 with a port
    try:
        return ip_address(text)
    except ValueError:
        return None


def _trusted(ip: IPv4Address | IPv6Address | None, networks: Iterable[Network]) -> bool:
    return ip is not None and any(ip in net for net in networks)


def _hops(request: web.BaseRequest) -> list[str]:
    if request.headers.get("Forwarded") is not None:
        return [f.get("for", "") for f in request.forwarded]
    return [h for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",")]


def resolve_client(request: web.BaseRequest, networks: tuple[Network, ...]) -> str | None:
    """The client's address, walking forwarded hops right to left through trusted proxies."""
    peer = request.remote
    if not networks or not _trusted(_address(peer or ""), networks):
        return peer
    found = peer
    for hop in reversed(_hops(request)):
        ip = _address(hop)
        if ip is None:  # an address our proxy did not write plainly: stop at what we know
            return found
        found = str(ip)
        if not _trusted(ip, networks):
            break
    return found


def from_trusted_proxy(request: web.Request) -> bool:
    """Whether the peer is one of `trusted_proxies`: only then is a forwarded header
    (X-Forwarded-For, Forwarded, X-Forwarded-Proto) believed."""
    networks: tuple[Network, ...] = request.app[TRUSTED]
    return _trusted(_address(request.remote or ""), networks)


def client_address(request: web.BaseRequest) -> str | None:
    """The address resolved for this request (the peer before the middleware ran)."""
    return request.get(CLIENT) or request.remote


@web.middleware
async def client_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[CLIENT] = resolve_client(request, request.app[TRUSTED])
    return await handler(request)


@dataclass
class FailureLimits:
    """Failed authentications per client address and minute, per replica: a guessing
    client is refused before its guesses reach the database."""

    per_minute: int  # 0: unlimited
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # tokens, stamp

    def _tokens(self, client: str, now: float) -> float:
        tokens, stamp = self._buckets.get(client, (float(self.per_minute), now))
        return min(float(self.per_minute), tokens + (now - stamp) * self.per_minute / 60)

    def check(self, client: str | None) -> None:
        if self.per_minute and client and self._tokens(client, time.monotonic()) < 1:
            raise RateLimited(
                f"too many requests with a missing or wrong API key from {client} "
                f"(at most {self.per_minute} a minute); check the key",
                headers={"Retry-After": str(max(1, round(60 / self.per_minute)))},
            )

    def failed(self, client: str | None) -> None:
        if not self.per_minute or not client:
            return
        now = time.monotonic()
        if len(self._buckets) >= MAX_TRACKED:
            full = [c for c in self._buckets if self._tokens(c, now) >= self.per_minute]
            for c in full:
                del self._buckets[c]
        self._buckets[client] = (self._tokens(client, now) - 1, now)


FAILURES = web.AppKey("auth_failures", FailureLimits)
