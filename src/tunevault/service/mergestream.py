"""A merge streamed into its archive: the merged shards are computed on a thread of their
own while the archive writer reads them, and are never written anywhere else.

A merged archive carries its `SHA256SUMS` last (tunevault.models.ArchiveFormat), so the
archive writer takes the shards' digests as they go by and the base is read once. An
evicted archive built with `SHA256SUMS` first is rebuilt as it was: pass one
(`tunevault.merge.merged_digests`) only hashes, pass two (this module) computes the same
bytes again into the archive, whose build re-checks each shard against pass one's xxh3.
Memory: QUEUE_BLOCKS buffers of the merge's largest block, reused: a fresh copy of every
block faulted in new pages (89-154k minor faults per merge of a 2 GiB model, against a
steady 74k reused: BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
from collections.abc import Callable, Mapping
from types import TracebackType

from tunevault.merge import Prepared, stream_shards

QUEUE_BLOCKS = 4
_PUT_WAIT_S = 0.5  # how often a blocked producer looks whether the reader gave up


class _Stopped(Exception):
    """The reader went away (the build failed): the producer stops."""


class ShardStream:
    """The shards of `prepared`, in name order, read with one `open()` per shard."""

    def __init__(self, prepared: Prepared) -> None:
        self._prepared = prepared
        self._queue: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(QUEUE_BLOCKS):
            self._free.put(bytearray())
        self._held: bytearray | None = None  # the reader's current buffer
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._pending = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(
            target=self._produce, name="tunevault-merge-stream", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> ShardStream:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # The producer's side: `stream_shards` writes here.
    def write(self, data: bytes | memoryview, /) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        buf = self._take_free()
        if len(buf) < n:
            buf = bytearray(n)  # grows to the largest block once, then is reused
        buf[:n] = view  # the merge reuses its own buffers as soon as this returns
        self._put((buf, n))
        return n

    def _take_free(self) -> bytearray:
        while True:
            if self._stopped.is_set():
                raise _Stopped
            try:
                return self._free.get(timeout=_PUT_WAIT_S)
            except queue.Empty:
                continue

    def _put(self, item: tuple[bytearray, int] | None) -> None:
        if self._stopped.is_set():
            raise _Stopped
        self._queue.put(item)  # never full: the free buffers bound it

    def _produce(self) -> None:
        try:
            stream_shards(self._prepared, self)
        except _Stopped:
            return
        except BaseException as e:  # handed to the reader, which raises it in the build
            self._error = e
        with contextlib.suppress(_Stopped):
            self._put(None)

    # The reader's side: the archive writer.
    def open(self, size: int) -> ShardReader:
        """The next shard, `size` bytes long (its size known from the plan)."""
        return ShardReader(self, size)

    def readinto(self, buf: memoryview) -> int:
        if not self._pending:
            self._release()
            if self._ended:
                return 0
            item = self._queue.get()
            if item is None:
                self._ended = True
                if self._error is not None:
                    raise self._error
                return 0
            self._held, n = item
            self._pending = memoryview(self._held)[:n]
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _release(self) -> None:
        """The reader is done with its buffer: the producer may fill it again."""
        if self._held is not None:
            self._pending = memoryview(b"")
            self._free.put(self._held)
            self._held = None

    def close(self) -> None:
        """Stop the producer (if the build ended early) and wait for it. Every buffer goes
        back to the free list, so that a producer waiting for one wakes at once and stops."""
        self._stopped.set()
        self._release()
        while self._thread.is_alive():
            try:
                item = self._queue.get(timeout=_PUT_WAIT_S)
            except queue.Empty:
                continue
            if item is not None:
                self._free.put(item[0])
        self._thread.join()


class ShardReader:
    """One shard of a ShardStream: its bytes, then end of file (a `Source` of the archive)."""

    def __init__(self, stream: ShardStream, size: int) -> None:
        self._stream = stream
        self._left = size

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def readinto(self, buf: memoryview) -> int:
        if self._left <= 0:
            return 0
        n = self._stream.readinto(buf[: self._left])
        self._left -= n
        return n

    def read(self, n: int = -1, /) -> bytes:
        """Up to `n` bytes (all that is left if negative), fewer only at the end."""
        buf = memoryview(bytearray(self._left if n < 0 else min(n, self._left)))
        got = 0
        while got < len(buf) and (k := self.readinto(buf[got:])):
            got += k
        return bytes(buf[:got])


class StreamedShards:
    """Openers for a build's shards: the first shard starts a pass of the merge (a build
    tried again starts another), the others continue it. Closed by `with`."""

    def __init__(self, prepared: Prepared, sizes: Mapping[str, int]) -> None:
        self._prepared = prepared
        self._sizes = sizes
        self._stream: ShardStream | None = None

    def openers(self) -> dict[str, Callable[[], ShardReader]]:
        return {name: functools.partial(self._open, name) for name in self._prepared.shards}

    def _open(self, name: str) -> ShardReader:
        if name == self._prepared.shards[0]:
            self.close()
            self._stream = ShardStream(self._prepared)
        if self._stream is None:
            raise RuntimeError(f"shard {name} opened before {self._prepared.shards[0]}")
        return self._stream.open(self._sizes[name])

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __enter__(self) -> StreamedShards:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
