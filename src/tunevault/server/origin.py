"""The origin a client used to reach the server: for the URLs the server hands out (share
links, pasted commands) and the console's same-origin check."""

from __future__ import annotations

from aiohttp import web


def public_origin(request: web.Request) -> str:
    """`scheme://host[:port]` as the client sees it. Behind a TLS-terminating proxy
    (docs/deploy.md) we hear plain http; the proxy's X-Forwarded-Proto names the client's
    scheme. Trusting it from anyone is harmless: a browser's cross-site request cannot set
    it, and a client that lies about it only misleads itself."""
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    scheme = proto if proto in ("http", "https") else request.scheme
    return f"{scheme}://{request.host}"
