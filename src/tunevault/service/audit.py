"""Writing the download audit off the request path, in batches.

A download answer should not wait for an INSERT: records go into a bounded queue that a
background task flushes in batches (one transaction for up to BATCH rows). At shutdown
the queue is drained. A crash loses at most the records of the last moments; a queue
that overflows (the database stalled) drops records and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging

from tunevault.metadata import MetadataStore
from tunevault.models import DownloadRecord

log = logging.getLogger("tunevault.audit")
BATCH = 500
QUEUE = 50_000


class AuditWriter:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.queue: asyncio.Queue[DownloadRecord] = asyncio.Queue(QUEUE)
        self.dropped = 0  # records lost to a full queue (a metric)

    def add(self, record: DownloadRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
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
            await asyncio.to_thread(self.store.record_downloads, batch)
        except Exception:
            # One bad row must not take its batch down with it: retry the rows one by one.
            for record in batch:
                try:
                    await asyncio.to_thread(self.store.record_downloads, [record])
                except Exception:  # keep serving; the database may come back
                    log.exception("could not write an audit record of %s", record.ft_id)

    async def run(self) -> None:
        while True:
            await self._flush_batch()
