"""One lookup at a time per key: requests that miss a cache together share one answer.

The key cache and the resolution cache keep an answer for a second; when it lapses, every
request in flight misses at once (a fleet's 200 connections: 200 thread hops and queries
on a pool of a few connections, the tail of every second). Here the first miss looks up
and the others await its answer, or its exception (a 404 is the same 404 for all).
The lookup runs as a task of its own, so the first request going away cancels nothing.

`refresh` starts the same lookup without waiting for it: a cached answer past half its
time is looked up again while requests go on being answered from it, so under steady
load the cache never lapses and no request waits, yet no answer is older than the
cache's time (a revoked key still fails within auth_cache_seconds).
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

    def refresh(
        self,
        key: Hashable,
        lookup: Callable[[], Awaitable[T]],
        keep: Callable[[T], None],
        forget: Callable[[], None],
    ) -> None:
        """Start `lookup` for `key` unless one runs; `keep` its answer, or `forget` the
        cached one if it raised (the next request looks up, and answers, itself)."""
        if key in self._running:
            return
        running = self._running[key] = asyncio.ensure_future(lookup())

        def done(_: asyncio.Future[Any]) -> None:
            self._finished(key, running)
            if running.cancelled() or running.exception() is not None:
                forget()
            else:
                keep(running.result())

        running.add_done_callback(done)

    def _finished(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved, though every request awaiting it went away


INFLIGHT = web.AppKey("inflight", InFlight)
