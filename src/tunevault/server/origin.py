"""The origin a client used to reach the server: for the URLs the server hands out (share
links, pasted commands) and the console's same-origin check."""

from __future__ import annotations

from aiohttp import web

from tunevault.server.clients import from_trusted_proxy


def public_origin(request: web.Request) -> str:
    """`scheme://host[:port]` as the client sees it. Behind a TLS-terminating proxy
    (docs/deploy.md) we hear plain http; the proxy's X-Forwarded-Proto names the client's
    scheme. It is believed only from a peer in `trusted_proxies`, as X-Forwarded-For is:
    from anyone else it would let a client choose the scheme of the links we hand out."""
    scheme = request.scheme
    if from_trusted_proxy(request):
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        scheme = proto if proto in ("http", "https") else scheme
    return f"{scheme}://{request.host}"
