"""Resume state of one download: `<name>.part` plus a sidecar `<name>.part.tv`.

The sidecar's first line is a JSON header (what is being downloaded: the request, the
ETag, the size, the expected digest); every later line is a span `start end` of bytes
already written to the .part. A span is appended only after its bytes were written, and
in O_APPEND mode, so after a crash or SIGKILL the sidecar never claims bytes the .part
lacks (the page cache outlives the process). Spans make resume exact to the byte and
work for several connections writing different places of a preallocated file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from tunevault.errors import InsufficientStorage, TunevaultError
from tunevault.storage import pagecache

PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.tv"
VERSION = 1


@dataclass(frozen=True)
class Target:
    """What the server says it is sending: fixed for the life of one .part."""

    identity: str  # base URL + request: a rerun finds its .part by this
    filename: str
    etag: str | None
    size: int
    sha256: str | None


class Spans:
    """A sorted set of disjoint half-open byte ranges."""

    def __init__(self) -> None:
        self._spans: list[tuple[int, int]] = []

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        merged: list[tuple[int, int]] = []
        for a, b in self._spans:
            if b < start or a > end:
                merged.append((a, b))
            else:
                start, end = min(a, start), max(b, end)
        merged.append((start, end))
        merged.sort()
        self._spans = merged

    def prefix(self) -> int:
        """Where the first gap starts."""
        return self._spans[0][1] if self._spans and self._spans[0][0] == 0 else 0

    def total(self) -> int:
        return sum(b - a for a, b in self._spans)

    def gaps(self, size: int) -> list[tuple[int, int]]:
        out, pos = [], 0
        for a, b in self._spans:
            if a > pos:
                out.append((pos, min(a, size)))
            pos = max(pos, b)
        if pos < size:
            out.append((pos, size))
        return out


def paths_for(final: Path) -> tuple[Path, Path]:
    return final.with_name(final.name + PART_SUFFIX), final.with_name(final.name + SIDECAR_SUFFIX)


class PartFile:
    """An open .part with its sidecar; thread-safe span recording."""

    def __init__(self, final: Path, target: Target, spans: Spans, fd: int, log_fd: int) -> None:
        self.final = final
        self.part, self.sidecar = paths_for(final)
        self.target = target
        self.spans = spans
        self.fd = fd
        self._log_fd = log_fd
        self._lock = threading.Lock()

    @classmethod
    def create(cls, final: Path, target: Target, *, reserve: bool = False) -> PartFile:
        """A new, empty .part of the full size; `reserve` also allocates its blocks."""
        part, sidecar = paths_for(final)
        _check_space(final.parent, target.size)
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _preallocate(fd, target.size, reserve)
            header = {"v": VERSION, **target.__dict__}
            tmp = sidecar.with_name(sidecar.name + ".new")
            tmp.write_text(json.dumps(header) + "\n")
            tmp.replace(sidecar)
            log_fd = os.open(sidecar, os.O_WRONLY | os.O_APPEND)
        except BaseException:
            os.close(fd)
            raise
        return cls(final, target, Spans(), fd, log_fd)

    @classmethod
    def load(cls, final: Path) -> PartFile | None:
        """The resumable state for `final`, or None if there is none or it is unusable."""
        part, sidecar = paths_for(final)
        try:
            lines = sidecar.read_text().split("\n")
            header = json.loads(lines[0])
            if header.pop("v", None) != VERSION:
                return None
            target = Target(**header)
            spans = Spans()
            # The last element is "" after a complete line, or a torn write: skipped either way.
            for line in lines[1:-1]:
                a, b = (int(x) for x in line.split())
                spans.add(max(a, 0), min(b, target.size))
            fd = os.open(part, os.O_RDWR)
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if os.fstat(fd).st_size != target.size:  # truncated or replaced behind our back
            os.close(fd)
            return None
        log_fd = os.open(sidecar, os.O_WRONLY | os.O_APPEND)
        return cls(final, target, spans, fd, log_fd)

    def pwrite(self, offset: int, data: memoryview, step: int = pagecache.STEP) -> None:
        try:
            pagecache.pwrite_all(self.fd, data, offset, step)
        except OSError as e:
            raise self.write_failed(e) from e

    def write_failed(self, e: OSError) -> TunevaultError:
        """What a failed write into the .part means, by whatever route the bytes came."""
        return _disk_error(self.part, e)

    def record(self, start: int, end: int) -> None:
        """Log bytes as present: only ever after they were written."""
        with self._lock:
            try:
                os.write(self._log_fd, f"{start} {end}\n".encode())
            except OSError as e:
                raise _disk_error(self.sidecar, e) from e
            self.spans.add(start, end)

    def prefix(self) -> int:
        """Where the first missing byte is: everything before it is written."""
        with self._lock:
            return self.spans.prefix()

    def missing(self) -> list[tuple[int, int]]:
        with self._lock:
            return self.spans.gaps(self.target.size)

    def close(self) -> None:
        for fd in (self.fd, self._log_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def discard(self) -> None:
        """Close and delete both files: after an integrity failure, or a changed archive."""
        self.close()
        for p in (self.part, self.sidecar):
            p.unlink(missing_ok=True)

    def commit(self) -> None:
        """Give the verified .part its final name (atomic) and drop the sidecar.

        No fsync, as curl and wget: a power cut may lose the file, a process death cannot.
        """
        self.close()
        self.part.replace(self.final)
        self.sidecar.unlink(missing_ok=True)


def _check_space(directory: Path, size: int) -> None:
    """A full disk should fail now, not at 90%."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if free < size:
        raise InsufficientStorage(
            f"{directory} has {free} bytes free; the download needs {size}", param="output"
        )


def _disk_error(path: Path, e: OSError) -> TunevaultError:
    """A failed write to our own files is the local disk's fault: unlike an OSError from
    the socket, it must not be retried as a dropped connection."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(
            f"the download disk is full: cannot write {path} ({e.strerror})", param="output"
        )
    return TunevaultError(f"cannot write {path}: {e}")


def _preallocate(fd: int, size: int, reserve: bool) -> None:
    """Pieces written out of order fragment a sparse file: reserve the blocks for those.
    A single in-order stream appends cheaply to a sparse file (fallocate on tmpfs zeroes
    every page up front)."""
    if reserve:
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError:  # filesystems without fallocate: a sparse file still takes pwrite
            pass
    os.ftruncate(fd, size)


def find_resumable(directory: Path, identity: str) -> PartFile | None:
    """The .part in `directory` that an earlier run of the same request left behind."""
    try:
        sidecars = sorted(directory.glob("*" + SIDECAR_SUFFIX))
    except OSError:
        return None
    for sidecar in sidecars:
        final = sidecar.with_name(sidecar.name.removesuffix(SIDECAR_SUFFIX))
        state = PartFile.load(final)
        if state is None:
            continue
        if state.target.identity == identity:
            return state
        state.close()
    return None
