"""Writing the download audit off the request path, in batches.

A download answer should not wait for an INSERT: records go into a bounded queue that a
background task flushes in batches (one transaction for up to BATCH rows). At shutdown
(SIGTERM) the server first lets in-flight downloads finish, then drains the queue, so
every answered download is recorded. kill -9 loses the records not yet committed: the
writer starts an INSERT as soon as a record arrives, so that is the downloads answered
during the last INSERT's round trip (more only while the database is slow: the backlog,
at most QUEUE records), plus downloads still in flight, which were never answered. A
queue that overflows (the database stalled) drops records and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from tunevault.metadata import MetadataStore
from tunevault.metadata.audit import DownloadRecord
from tunevault.server.context import blocking

log = logging.getLogger("tunevault.audit")
BATCH = 500
QUEUE = 50_000


class AuditWriter:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.queue: asyncio.Queue[DownloadRecord] = asyncio.Queue(QUEUE)

    def add(self, record: DownloadRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            log.error("audit queue full: a download record was dropped")

    async def _flush_batch(self) -> None:
        batch = [await self.queue.get()]
        while len(batch) < BATCH and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        try:
            await self._write(batch)
        finally:
            for _ in batch:
                self.queue.task_done()

    async def _write(self, batch: list[DownloadRecord]) -> None:
        try:
            await blocking(self.store.record_downloads, batch)
        except Exception:
            # One bad row must not take its batch down with it: retry the rows one by one.
            for record in batch:
                try:
                    await blocking(self.store.record_downloads, [record])
                except Exception:  # keep serving; the database may come back
                    log.exception("could not write an audit record of %s", record.ft_id)

    async def run(self) -> None:
        while True:
            await self._flush_batch()


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
