"""The sha256 of a .part, in file order, while its bytes arrive in any order.

A writer whose bytes extend the hashed prefix hashes them on the spot, from its buffer
while they are hot in cache (`feed`, called after the write and before the span is
recorded, so it usually wins); the thread catches up from the file itself (mmap, no
copy) on whatever arrived out of order or was already there from an earlier run.
"""

from __future__ import annotations

import hashlib
import mmap
import threading

from tunevault.client.state import PartFile

CHUNK = 4 << 20


class Hasher(threading.Thread):
    def __init__(self, part: PartFile) -> None:
        super().__init__(name="tunevault-hash", daemon=True)
        self.part = part
        self.stop = threading.Event()
        self.digest: str | None = None
        self.error: BaseException | None = None
        self._hash = hashlib.sha256()
        self._pos = 0
        self._lock = threading.Lock()

    def feed(self, offset: int, data: memoryview) -> None:
        if offset != self._pos or not self._lock.acquire(blocking=False):
            return  # not next in line, or the thread is busy: it will read it from the file
        try:
            if offset == self._pos:
                self._hash.update(data)
                self._pos += len(data)
        finally:
            self._lock.release()

    def run(self) -> None:
        try:
            self._follow()
        except BaseException as e:
            self.error = e

    def _follow(self) -> None:
        part, size = self.part, self.part.target.size
        if size > 0:
            with mmap.mmap(part.fd, size, prot=mmap.PROT_READ) as mm:
                mm.madvise(mmap.MADV_SEQUENTIAL)
                view = memoryview(mm)
                try:
                    self._catch_up(view, size)
                finally:
                    view.release()
        if self._pos == size:
            self.digest = self._hash.hexdigest()

    def _catch_up(self, view: memoryview, size: int) -> None:
        part = self.part
        while self._pos < size and not self.stop.is_set():
            with part.changed:
                while part.spans.prefix() <= self._pos < size and not self.stop.is_set():
                    part.changed.wait(0.2)
                end = part.spans.prefix()
            while self._pos < end and not self.stop.is_set():
                with self._lock:
                    n = min(CHUNK, end - self._pos)
                    self._hash.update(view[self._pos : self._pos + n])
                    self._pos += n
