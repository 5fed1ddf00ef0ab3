"""The audit writer's place in the app: started with it, drained when it stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from tunevault.service.audit import AuditWriter

AUDIT = web.AppKey("audit", AuditWriter)


async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run the writer while the app runs, drain it at shutdown."""
    writer = app[AUDIT]
    task = asyncio.create_task(writer.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await writer.drain()
