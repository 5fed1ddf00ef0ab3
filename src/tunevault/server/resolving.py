"""Serving what a download names from a resolution made a moment ago (service/recent.py),
or made now. A cached resolution whose blob has gone (evicted, to be rebuilt) is dropped
and resolved again, so eviction shows as the fresh answer (e.g. 409 while it rebuilds),
never as a 500."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from aiohttp import web

from tunevault.server.context import blocking
from tunevault.server.inflight import INFLIGHT
from tunevault.service.recent import Recent

T = TypeVar("T")
RESOLUTIONS = web.AppKey("resolutions", Recent[Any])


async def serve_resolved(
    request: web.Request,
    key: Hashable,
    resolve: Callable[[], Awaitable[T]],
    serve: Callable[[T], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """`serve(await resolve())`, with `resolve`'s answer kept for the next requests of
    `key`. Only successes are kept: a 404 or a 409 is looked up again each time. Requests
    that miss together share one lookup (server/inflight.py). A blob that goes between
    the lookup and the read (evicted) is looked up once more, by this request alone.
    Past half its time a kept answer is resolved again in the background (inflight.py)."""
    cache: Recent[T] = request.app[RESOLUTIONS]
    hit = cache.get(key)
    if hit is not None:
        if cache.ageing(key):  # resolved again meanwhile: under load it never lapses
            request.app[INFLIGHT].refresh(
                key, resolve, lambda found: cache.put(key, found), lambda: cache.drop(key)
            )
        try:
            return await serve(hit)
        except FileNotFoundError:  # raised before the first byte (server/blob.py)
            cache.drop(key)
    found = await request.app[INFLIGHT].run(key, resolve)
    try:
        response = await serve(found)
    except FileNotFoundError:
        found = await resolve()
        response = await serve(found)
    cache.put(key, found)
    return response


def in_thread(fn: Callable[..., T], *args: Any) -> Callable[[], Awaitable[T]]:
    """A resolver for `serve_resolved` that runs a blocking lookup off the loop."""
    return functools.partial(blocking, fn, *args)
