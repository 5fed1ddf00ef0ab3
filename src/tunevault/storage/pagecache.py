"""Writes into the page cache in steps of 16 KiB, whatever size the caller has in hand.

Linux sizes a file's new page-cache folios by the write that creates them (a 256 KiB
write takes one 256 KiB folio). On this project's VM, writing 2 GiB into a new file in
1 MiB writes cost 0.5 s of system time in some runs and 5-13 s in others, in 16 KiB writes
0.9-1.2 s in every run (bench/pagecache_bench.py, with dd as well as with Python); the
client's one-connection download went from 11.1 s to 2.4 s (BENCHMARKS.md). The likely
cause: small folios come from the per-CPU lists of recently freed pages, large ones from
the big free blocks that the VM's free page reporting has handed back to its host, whose
first touch faults in the host inside the copy. A step costs one system call per 16 KiB.
"""

from __future__ import annotations

import os

STEP = 16 << 10


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
