"""Small local blobs kept in memory, sent without opening their file.

A fleet fetching an adapter (an archive of about 0.5 MiB) pays per request, not per byte:
open, fstat, flock, asyncio's sendfile (a selector round trip per call) and close cost
more than the bytes. Blobs up to SMALL bytes are read once per process into an LRU of
`memory_cache_bytes` and answered from there.

Bytes never change for what is kept: an entry is named by the blob's key *and* sha256
(an archive's key names its inputs, so a rebuild may differ), and what was read is
hashed before it is kept. The resolve still decides first, and every answer then checks
that the file is still there, as opening it did: an evicted blob is resolved again
(server/resolving.py), never answered from memory.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections import OrderedDict
from pathlib import Path

from aiohttp import web

from tunevault.server.context import blocking
from tunevault.server.inflight import INFLIGHT
from tunevault.storage.inuse import read_lock

SMALL = 2 << 20  # bigger blobs are sent from the file: their cost is the bytes


class SmallBlobs:
    """An LRU of blob bytes by (key, sha256), up to `budget` bytes in all."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def get(self, key: str, sha256: str) -> bytes | None:
        data = self._entries.get((key, sha256))
        if data is not None:
            self._entries.move_to_end((key, sha256))
        return data

    def put(self, key: str, sha256: str, data: bytes) -> None:
        if len(data) > self.budget or (key, sha256) in self._entries:
            return
        while self.used + len(data) > self.budget:
            _, old = self._entries.popitem(last=False)
            self.used -= len(old)
        self._entries[(key, sha256)] = data
        self.used += len(data)


SMALL_BLOBS = web.AppKey("small_blobs", SmallBlobs)


def _read(path: str, sha256: str) -> bytes | None:
    """The file's bytes if they hash to `sha256` (else None: send from the file)."""
    with Path(path).open("rb") as f:
        read_lock(f.fileno())  # waits only while an eviction holds it, as a download does
        data = f.read()
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


async def small_blob(
    request: web.Request, path: str, key: str, size: int, sha256: str
) -> bytes | None:
    """The blob's bytes from memory (read on a miss), or None to send it from the file.
    Raises FileNotFoundError when the file is gone (evicted), kept or not."""
    cache = request.app[SMALL_BLOBS]
    if size > SMALL or size > cache.budget:
        return None
    os.stat(path)  # noqa: PTH116 - still there? (as opening it told); no Path per request
    data = cache.get(key, sha256)
    if data is None:
        read = functools.partial(blocking, _read, path, sha256)
        data = await request.app[INFLIGHT].run(("bytes", key, sha256), read)
        if data is not None:
            cache.put(key, sha256, data)
    return data
