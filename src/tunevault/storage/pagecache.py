"""Writes into the page cache in steps, whatever size the caller has in hand.

Linux sizes a file's new page-cache folios by the write that creates them (a 256 KiB
write takes one 256 KiB folio). On this project's VM, writes of 1 MiB into a new file
cost 6.6-7.7 s of system time per 1.6 GiB once the VM's free page reporting had handed
the free memory back to its host, against 0.43-0.62 s for writes of 64-512 KiB and
0.85-1.03 s for 16 KiB (bench/pagecache_bench.py, BENCHMARKS.md). The likely cause:
folios of 1 MiB come from the big free blocks the host took back, whose first touch
faults in the host inside the copy; smaller ones do not. The client's one-connection
download went from 11.1 s to 2.4 s with 16 KiB steps, and the server's archives, blobs
and merged files are written in steps of LARGE.
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
