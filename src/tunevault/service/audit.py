"""Writing the download audit off the request path, in batches.

A download answer should not wait for an INSERT: records go into a bounded queue that a
background task flushes in batches (one transaction for up to BATCH rows). At shutdown
the queue is drained. A crash loses at most the records of the last moments; a queue
that overflows (the database stalled) drops records and says so in the log. The start of
an archive download rides the same queue (its archive's sha256): each batch also dates
the last download of the archives it names, the order in which the cache evicts them
(tunevault.service.cache). Hub file downloads date nothing: a file is no archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tunevault.metadata import MetadataStore
from tunevault.models import DownloadRecord

log = logging.getLogger("tunevault.audit")
BATCH = 500
QUEUE = 50_000


class AuditWriter:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.queue: asyncio.Queue[DownloadRecord | str] = asyncio.Queue(QUEUE)
        self.dropped = 0  # records lost to a full queue (a metric)

    def add(self, record: DownloadRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("audit queue full: a download record was dropped")

    def began(self, sha256: str) -> None:
        """A download of the archive with this digest began (the record follows its end)."""
        with contextlib.suppress(asyncio.QueueFull):  # only the LRU order loses a touch
            self.queue.put_nowait(sha256)

    async def _flush_batch(self) -> None:
        batch = [await self.queue.get()]
        while len(batch) < BATCH and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        try:
            await self._write(batch)
        finally:
            for _ in batch:
                self.queue.task_done()

    async def _write(self, batch: list[DownloadRecord | str]) -> None:
        began = {b for b in batch if isinstance(b, str)}
        records = [b for b in batch if not isinstance(b, str)]
        try:
            await asyncio.to_thread(self.store.record_downloads, records, began)
        except Exception:
            # One bad row must not take its batch down with it: retry the rows one by one.
            for record in records:
                try:
                    await asyncio.to_thread(self.store.record_downloads, [record])
                except Exception:  # keep serving; the database may come back
                    log.exception("could not write an audit record of %s", record.ft_id)

    async def run(self) -> None:
        while True:
            await self._flush_batch()
