"""The sha256 of a .part, in file order, while its bytes arrive in any order.

Writers that read into buffers hand each written buffer to the hasher thread (`submit`),
which hashes it while the writer already receives the next one. Everything else is read
back from the file itself once it joins the written prefix (`nudge` says it may have
grown): spliced bytes, which never pass through a buffer, a buffer that was not next in
file order, and bytes already there from an earlier run. Read back with pread into one
reused buffer, not through an mmap of the whole file: with the page cache full of other
files, faulting a 2 GiB mapping in page by page under reclaim doubled the client's
system time (BENCHMARKS.md, client download). The buffer is small enough to stay in the
CPU's cache between the copy into it and the sha256 that reads it, so the read-back does
not stream every byte through memory twice more.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable

from tunevault.client.state import PartFile

CHUNK = 256 << 10
POLL_S = 0.2

_Item = tuple[int, memoryview, Callable[[], None]] | None


class Hasher(threading.Thread):
    def __init__(self, part: PartFile) -> None:
        super().__init__(name="tunevault-hash", daemon=True)
        self.part = part
        self.stop = threading.Event()
        self.digest: str | None = None
        self.error: BaseException | None = None
        self._hash = hashlib.sha256()
        self._pos = 0
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done = False

    def submit(self, offset: int, data: memoryview, release: Callable[[], None]) -> None:
        """Hash these written bytes if they are next in order; `release()` when done."""
        with self._lock:
            if not self._done:
                self._queue.put((offset, data, release))
                return
        release()

    def nudge(self) -> None:
        """The written prefix may have grown by bytes nobody submitted: go and look."""
        self._queue.put(None)

    def run(self) -> None:
        try:
            size = self.part.target.size
            self._follow(memoryview(bytearray(CHUNK)), size)
            if self._pos == size:
                self.digest = self._hash.hexdigest()
        except BaseException as e:
            self.error = e
        finally:
            with self._lock:
                self._done = True
            self._drain()

    def _drain(self) -> None:
        """Give every pending buffer back, so that no writer waits for one forever."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[2]()

    def _follow(self, buf: memoryview, size: int) -> None:
        while self._pos < size and not self.stop.is_set():
            try:
                item = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                item = None
            if item is not None:
                offset, data, release = item
                try:
                    if offset == self._pos:
                        self._hash.update(data)
                        self._pos += len(data)
                finally:
                    release()
            end = self.part.prefix()
            while self._pos < end and not self.stop.is_set():
                n = os.preadv(self.part.fd, [buf[: min(CHUNK, end - self._pos)]], self._pos)
                if n <= 0:
                    raise OSError(f"{self.part.part} ends before its recorded prefix")
                self._hash.update(buf[:n])
                self._pos += n
