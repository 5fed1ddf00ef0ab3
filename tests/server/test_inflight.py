"""Concurrent misses of a cache share one lookup: its answer or its exception, and a
request that goes away cancels nothing the others wait for."""

from __future__ import annotations

import asyncio

import pytest

from tunevault.errors import NotFound
from tunevault.server.inflight import InFlight

pytestmark = pytest.mark.asyncio


class Lookup:
    """Counts its calls and answers when `release` is set."""

    def __init__(self, answer: str | Exception) -> None:
        self.answer, self.calls, self.release = answer, 0, asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        await self.release.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_concurrent_misses_share_one_lookup_and_later_ones_look_again() -> None:
    inflight, lookup = InFlight(), Lookup("found")
    waiting = [asyncio.create_task(inflight.run("k", lookup)) for _ in range(50)]
    await asyncio.sleep(0)
    lookup.release.set()
    assert await asyncio.gather(*waiting) == ["found"] * 50
    assert lookup.calls == 1
    assert await inflight.run("k", lookup) == "found" and lookup.calls == 2


async def test_every_waiter_gets_the_lookups_exception() -> None:
    inflight, lookup = InFlight(), Lookup(NotFound("no such fine-tune"))
    waiting = [asyncio.create_task(inflight.run("k", lookup)) for _ in range(3)]
    await asyncio.sleep(0)
    lookup.release.set()
    for outcome in await asyncio.gather(*waiting, return_exceptions=True):
        assert isinstance(outcome, NotFound)
    assert lookup.calls == 1


async def test_the_first_request_going_away_leaves_the_lookup_to_the_others() -> None:
    inflight, lookup = InFlight(), Lookup("found")
    first = asyncio.create_task(inflight.run("k", lookup))
    second = asyncio.create_task(inflight.run("k", lookup))
    await asyncio.sleep(0)
    first.cancel()
    lookup.release.set()
    assert await second == "found"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert lookup.calls == 1


async def test_a_refresh_keeps_its_answer_and_a_miss_meanwhile_shares_it() -> None:
    inflight, lookup, kept = InFlight(), Lookup("new"), []
    inflight.refresh("k", lookup, kept.append, lambda: kept.append("forgotten"))
    inflight.refresh("k", lookup, kept.append, lambda: kept.append("forgotten"))  # running
    miss = asyncio.create_task(inflight.run("k", lookup))
    await asyncio.sleep(0)
    lookup.release.set()
    assert await miss == "new"
    assert kept == ["new"] and lookup.calls == 1


async def test_a_refresh_that_fails_forgets_the_kept_answer() -> None:
    inflight, lookup, kept = InFlight(), Lookup(NotFound("deleted")), []
    inflight.refresh("k", lookup, kept.append, lambda: kept.append("forgotten"))
    lookup.release.set()
    while not kept:
        await asyncio.sleep(0)
    assert kept == ["forgotten"]
