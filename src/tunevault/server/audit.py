"""The audit writer's place in the app: started with it, drained when it stops.

At shutdown (SIGTERM) the server first lets in-flight downloads finish, then drains the
queue, so every answered download is recorded. kill -9 loses the records not yet
committed: the writer starts an INSERT as soon as a record arrives, so that is the
downloads answered during the last INSERT's round trip (more only while the database is
slow: the backlog, at most QUEUE records), plus downloads still in flight, which were
never answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from tunevault.service.audit import AuditWriter

AUDIT = web.AppKey("audit", AuditWriter)


async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run the writer while the app runs; at shutdown wait until every queued
    record is written, and only then stop it. Cancelling it mid-batch lost that batch: a
    cancelled thread-pool call that had not started yet never runs."""
    writer = app[AUDIT]
    task = asyncio.create_task(writer.run())
    yield
    await writer.queue.join()
    task.cancel()  # now waiting on an empty queue, holding nothing
    with contextlib.suppress(asyncio.CancelledError):
        await task
