"""Deterministic tar.zst archives of a checkpoint.

The same files always give the same bytes: members sorted by path, a `SHA256SUMS` member
first (so a streaming reader knows every digest before the files arrive), fixed owner,
mode and mtime, PAX headers, one zstd frame with a fixed level. Files sit at the archive
root, as Together's archives have them. Every input is hashed while it is read, so a blob
that rotted on disk fails the build instead of reaching a user.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import zstandard

from tunevault.errors import IntegrityError
from tunevault.models import FileEntry

FORMAT_VERSION = "tv-archive-1"
SUMS_NAME = "SHA256SUMS"
MTIME = 1577836800  # 2020-01-01T00:00:00Z: fixed so that rebuilds are byte-identical
CHUNK = 4 << 20
_BLOCK = 512
_RECORD = 20 * _BLOCK


class Sink(Protocol):
    def write(self, data: bytes | memoryview, /) -> int: ...


@dataclass(frozen=True)
class ArchiveResult:
    sha256: str
    size: int


class _HashingSink:
    """Counts and hashes the compressed bytes on their way to the real sink."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._sink.write(data)
        return len(data)

    def flush(self) -> None:
        """zstandard's stream writer flushes its sink; the real sink commits later."""

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def sums_text(files: Sequence[FileEntry]) -> bytes:
    """The `SHA256SUMS` member, in `sha256sum -c` format."""
    return "".join(f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path)).encode()


def input_digest(files: Sequence[FileEntry], level: int) -> str:
    """Names an archive by what goes into it, so a rebuild lands on the same key."""
    h = hashlib.sha256(f"{FORMAT_VERSION}\nzstd-{level}\n".encode())
    h.update(sums_text(files))
    return h.hexdigest()


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int, unit: int = _BLOCK) -> bytes:
    return b"\0" * (-size % unit)


def write_archive(
    files: Sequence[FileEntry],
    open_file: Callable[[FileEntry], BinaryIO],
    sink: Sink,
    *,
    level: int = 3,
    threads: int = -1,
) -> ArchiveResult:
    """Write the tar.zst of `files` to `sink`; `open_file` yields each file's bytes."""
    entries = sorted(files, key=lambda f: f.path)
    if len({f.path for f in entries}) != len(entries) or any(f.path == SUMS_NAME for f in entries):
        raise ValueError("archive member paths must be unique and not SHA256SUMS")
    out = _HashingSink(sink)
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    tar_size = 0
    with cctx.stream_writer(out, closefd=False, write_size=CHUNK) as z:  # type: ignore[arg-type]

        def emit(data: bytes | memoryview) -> None:
            nonlocal tar_size
            z.write(data)
            tar_size += len(data)

        sums = sums_text(entries)
        emit(_header(SUMS_NAME, len(sums)))
        emit(sums + _padding(len(sums)))
        for entry in entries:
            emit(_header(entry.path, entry.size))
            _copy_verified(entry, open_file, emit)
            emit(_padding(entry.size))
        emit(b"\0" * (2 * _BLOCK))
        emit(_padding(tar_size, _RECORD))
    return ArchiveResult(sha256=out.hexdigest(), size=out.size)


def _copy_verified(
    entry: FileEntry,
    open_file: Callable[[FileEntry], BinaryIO],
    emit: Callable[[bytes | memoryview], None],
) -> None:
    digest = hashlib.sha256()
    seen = 0
    with open_file(entry) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            seen += len(chunk)
            if seen > entry.size:
                break
            emit(chunk)
    if seen != entry.size or digest.hexdigest() != entry.sha256:
        raise IntegrityError(
            f"stored content of {entry.path!r} does not match its manifest "
            f"(size {seen} vs {entry.size}); the blob is corrupt, re-push the checkpoint"
        )
