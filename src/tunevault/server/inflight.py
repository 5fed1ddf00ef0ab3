"""One lookup at a time per key: requests that miss a cache together share one answer.

The key cache and the resolution cache keep an answer for a second; when it lapses, every
request in flight misses at once (a fleet's 200 connections: 200 thread hops and queries
on a pool of a few connections, the tail of every second). Here the first miss looks up
and the others await its answer, or its exception (a 404 is the same 404 for all).
The lookup runs as a task of its own, so the first request going away cancels nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


class InFlight:
    """Lookups running now, by key; each is forgotten as it finishes."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(self, key: Hashable, lookup: Callable[[], Awaitable[T]]) -> T:
        """`await lookup()`, or the answer of the one already running for `key`."""
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(lookup())
            self._running[key] = running
            running.add_done_callback(lambda done: self._finished(key, done))
        result: T = await asyncio.shield(running)
        return result

    def _finished(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved, though every request awaiting it went away


INFLIGHT = web.AppKey("inflight", InFlight)
