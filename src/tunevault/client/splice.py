"""Body bytes from a socket into the .part inside the kernel, with Linux splice(2).

recv + pwrite copy every byte into the interpreter and out again, one loop turn per
buffer; splice moves the socket's pages into a pipe and the pipe into the file's page
cache: one copy and no Python per byte. TLS sockets and platforms without `os.splice`
keep the buffer path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import threading
from dataclasses import dataclass

from tunevault.storage import pagecache

SUPPORTED = hasattr(os, "splice") and hasattr(fcntl, "F_SETPIPE_SZ")
PIPE_SIZE = 1 << 20  # Linux's default limit for unprivileged processes (pipe-max-size)


class WriteFailed(Exception):
    """Writing to the file failed: the disk's fault, not the socket's. Deliberately not an
    OSError, which callers take for a dropped connection and retry."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Writing:
    """How the connections of one download write into its file.

    In page-cache steps (storage/pagecache.py): 16 KiB for one connection; several spent
    more system time in 16 KiB steps than in 32 KiB ones (2 GiB: 3.4-3.5 s against
    2.6-2.9 s). Several also take turns over a lock of ours: each write holds the file's
    inode lock, and four writers spinning on it cost 9% of the download's CPU samples
    (`rwsem_spin_on_owner`); with the turns, system time fell from 2.40 to 1.99 s
    (BENCHMARKS.md, client download).
    """

    step: int
    turn: contextlib.AbstractContextManager[object]

    @classmethod
    def for_connections(cls, connections: int) -> Writing:
        if connections == 1:
            return cls(pagecache.STEP, contextlib.nullcontext())
        return cls(2 * pagecache.STEP, threading.Lock())


class Pipe:
    """One pipe for one connection: socket -> pipe -> file, drained after every move."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.capacity = 64 << 10  # the kernel's default, if it refuses a bigger pipe
        with contextlib.suppress(OSError):
            self.capacity = fcntl.fcntl(self.w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)

    def move(
        self,
        sock: int,
        timeout: float | None,
        fd: int,
        offset: int,
        limit: int,
        writing: Writing,
    ) -> int:
        """Up to `limit` bytes from `sock` to `fd` at `offset`, written as `writing` says;
        0 at the end of the stream.

        Sockets with a timeout are non-blocking underneath, so waiting is done here with
        poll; a wait longer than `timeout` raises TimeoutError, as a recv would. Socket
        failures raise OSError, file failures WriteFailed.
        """
        while True:
            try:
                n = os.splice(sock, self.w, min(limit, self.capacity))
                break
            except BlockingIOError:
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                if not poller.poll(None if timeout is None else timeout * 1000):
                    raise TimeoutError("timed out") from None
        done = 0
        with writing.turn:
            while done < n:  # the pipe must be empty again before the next move
                try:
                    step = min(n - done, writing.step)
                    moved = os.splice(self.r, fd, step, offset_dst=offset + done)
                except OSError as e:
                    raise WriteFailed(e) from e
                if moved == 0:
                    raise WriteFailed(
                        OSError(f"could not write {n - done} bytes at offset {offset + done}")
                    )
                done += moved
        return n

    def close(self) -> None:
        for end in (self.r, self.w):
            with contextlib.suppress(OSError):
                os.close(end)
