"""Scratch files in use: the process working on one holds an flock on it.

Partial uploads, local-storage temp files and merge scratch directories are each locked by
the process writing them. The kernel drops the lock when that process exits, however it
dies (kill -9 included), so `tunevault gc` can tell debris from live work without trusting
ages alone: it removes only what it can lock itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path


def claim(fd: int, path: Path) -> bool:
    """Lock the open `fd` for this process, if nobody holds it and `path` still names it.

    False when another process holds it, or when gc removed the path between our open and
    our lock (then the caller opens a fresh one).
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def remove_if_idle(path: Path, cutoff: float, *, dry_run: bool = False) -> int | None:
    """Remove a scratch file or directory untouched since `cutoff` (epoch seconds) that no
    live process holds; the bytes it held, or None when it was kept."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # gone already, or a symlink: not ours to follow
        return None
    try:
        if not claim(fd, path):
            return None
        st = os.fstat(fd)
        if st.st_mtime >= cutoff:
            return None
        if stat.S_ISDIR(st.st_mode):
            size = _tree_bytes(path)
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
            return size
        if not dry_run:
            path.unlink(missing_ok=True)
        return st.st_size
    finally:
        os.close(fd)  # after the removal: nobody can claim it in between


def _tree_bytes(root: Path) -> int:
    """Bytes of the regular files under root; symlinks (merge inputs link to blobs) are not
    followed or counted."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = (Path(dirpath) / name).lstat()
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


@contextlib.contextmanager
def exclusive(path: str | None) -> Iterator[bool]:
    """For the block, hold a file nobody reads: yields False when a reader holds its
    shared lock (`read_lock`: a download sending it), else True with the file locked
    against new readers. A missing file, or None (not on local disk), yields True."""
    if path is None:
        yield True
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def read_lock(fd: int) -> None:
    """Mark an open file as being read (a shared flock, released with the fd): `exclusive`
    then leaves it alone. Waits only while an evictor holds it, which takes milliseconds;
    the bytes stay readable through `fd` even if the evictor removed the name."""
    fcntl.flock(fd, fcntl.LOCK_SH)


def try_read_lock(fd: int) -> bool:
    """`read_lock` if it is free now (the usual case), without waiting: False when an
    evictor holds the file and `read_lock` would wait."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
