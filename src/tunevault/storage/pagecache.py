"""Writes into the page cache in steps, whatever size the caller has in hand.

Linux sizes a file's new page-cache folios by the write that creates them (a 256 KiB
write takes one 256 KiB folio). On this project's VM, once its free page reporting has
handed the free memory back to the host, 1.6 GiB written into a new file in 1 MiB writes
cost 2.1-3.3 s of system time (6.6-7.7 s by hand earlier that evening), in 128-256 KiB
writes 0.35-0.56 s in 10 runs of 12, in 16 KiB writes 0.60-0.94 s (dd the same as
Python: bench/pagecache_bench.py, BENCHMARKS.md). The likely cause: 1 MiB folios come
from the big free blocks the host took back, whose first touch faults in the host
inside the copy. The client's one-connection download went from 11.1 s to 2.4 s with
16 KiB steps; the server writes its files in steps of LARGE.
"""

from __future__ import annotations

import os
from typing import BinaryIO

STEP = 16 << 10  # the client's downloads (measured on its splice path)
LARGE = 256 << 10  # the server's files: the cheapest step measured, at 1/16 the calls of 16 KiB


def pwrite_all(fd: int, data: memoryview, offset: int, step: int = STEP) -> None:
    """All of `data` at `offset`, in steps."""
    done, size = 0, len(data)
    while done < size:
        done += os.pwrite(fd, data[done : done + step], offset + done)


def write_all(fd: int, data: memoryview) -> None:
    """All of `data` at the file's position, in steps."""
    done, size = 0, len(data)
    while done < size:
        done += os.write(fd, data[done : done + STEP])


def write_file(f: BinaryIO, data: bytes | bytearray | memoryview, step: int = LARGE) -> int:
    """All of `data` to the file object `f`, buffered or not, in steps; its length."""
    view = memoryview(data).cast("B")
    size = len(view)
    while view:  # an unbuffered write may store less than asked (a nearly full disk)
        view = view[f.write(view[:step]) :]
    return size
