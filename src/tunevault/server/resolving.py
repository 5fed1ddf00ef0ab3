"""Serving what a download names from a resolution made a moment ago (service/recent.py),
or made now. A cached resolution whose blob has gone (evicted, to be rebuilt) is dropped
and resolved again, so eviction shows as the fresh answer (e.g. 409 while it rebuilds),
never as a 500."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from aiohttp import web

from tunevault.server.context import blocking
from tunevault.service.recent import Recent

T = TypeVar("T")
RESOLUTIONS = web.AppKey("resolutions", Recent[Any])


async def serve_resolved(
    request: web.Request,
    key: Hashable,
    resolve: Callable[[], T],
    serve: Callable[[T], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """`serve(resolve())`, with `resolve`'s answer kept for the next requests of `key`.
    Only successes are kept: a 404 or a 409 is looked up again each time."""
    cache: Recent[T] = request.app[RESOLUTIONS]
    hit = cache.get(key)
    if hit is not None:
        try:
            return await serve(hit)
        except FileNotFoundError:  # raised before the first byte (server/blob.py)
            cache.drop(key)
    found = await blocking(resolve)
    cache.put(key, found)
    return await serve(found)
