"""Body bytes from a socket into the .part inside the kernel, with Linux splice(2).

recv + pwrite copy every byte into the interpreter and out again, one loop turn per
buffer; splice moves the socket's pages into a pipe and the pipe into the file's page
cache: one copy and no Python per byte. TLS sockets and platforms without `os.splice` keep the
buffer path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select

SUPPORTED = hasattr(os, "splice") and hasattr(fcntl, "F_SETPIPE_SZ")
PIPE_SIZE = 1 << 20  # Linux's default limit for unprivileged processes (pipe-max-size)


class WriteFailed(Exception):
    """Writing to the file failed: the disk's fault, not the socket's. Deliberately not an
    OSError, which callers take for a dropped connection and retry."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class Pipe:
    """One pipe for one connection: socket -> pipe -> file, drained after every move."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.capacity = 64 << 10  # the kernel's default, if it refuses a bigger pipe
        with contextlib.suppress(OSError):
            self.capacity = fcntl.fcntl(self.w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)

    def move(
        self, sock: int, timeout: float | None, fd: int, offset: int, limit: int, step: int
    ) -> int:
        """Up to `limit` bytes from `sock` to `fd` at `offset`, written `step` bytes at a
        time (storage/pagecache.py); 0 at the end of the stream.

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
        while done < n:  # the pipe must be empty again before the next move
            try:
                moved = os.splice(self.r, fd, min(n - done, step), offset_dst=offset + done)
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
