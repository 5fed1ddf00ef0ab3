"""Deterministic tar.zst archives of a checkpoint.

The same files always give the same bytes: members sorted by path, a `SHA256SUMS` member
(in the format the archive is built in, tunevault.models.ArchiveFormat: first, so a
streaming reader knows every digest before the files arrive, or last, for files made as
they are packed, whose digests are taken then), fixed owner, mode and mtime, PAX headers,
one zstd frame with a fixed level. Files sit at the archive root, as Together's archives
have them. Every stored input is re-checked while it is read (its xxh3, or its sha256 when
none was recorded), so a blob that rotted on disk fails the build instead of reaching a
user.

Three threads share the work (bench.build_stages measures each stage): this one reads
into one reused buffer and feeds zstd, zstd's workers compress, and a writer thread
hashes the output for the ETag and hands it to storage.
"""

from __future__ import annotations

import hashlib
import queue
import tarfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import zstandard

from tunevault.archive.checksums import MadeDigest, StoredCheck
from tunevault.errors import IntegrityError
from tunevault.models import ArchiveFormat, FileEntry

SUMS_NAME = "SHA256SUMS"
MTIME = 1577836800  # 2020-01-01T00:00:00Z: fixed so that rebuilds are byte-identical
CHUNK = 1 << 20  # reads (into one buffer, reused: no allocation per read) and compressed writes
WRITE_QUEUE = 8  # compressed chunks waiting for the writer thread: bounds memory
_BLOCK = 512
_RECORD = 20 * _BLOCK


class Sink(Protocol):
    def write(self, data: bytes | memoryview, /) -> int: ...


class Source(Protocol):
    """A file's bytes, read in order and closed by `with` (a file, a storage reader)."""

    def read(self, n: int = -1, /) -> bytes: ...

    def __enter__(self) -> Source: ...

    def __exit__(self, t: Any, v: Any, tb: Any, /) -> None: ...


@dataclass(frozen=True)
class ArchiveResult:
    sha256: str
    size: int
    files: tuple[FileEntry, ...]  # the members as packed, every sha256 known


class _Writer(threading.Thread):
    """Hashes and counts the compressed bytes and writes them to the real sink, on a thread
    of its own: reading and compressing the next input go on meanwhile."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(name="tunevault-archive-writer", daemon=True)
        self._sink = sink
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(WRITE_QUEUE)
        self.error: BaseException | None = None
        self.size = 0
        self.start()

    def write(self, data: bytes | memoryview) -> int:
        if self.error is not None:
            raise self.error  # the storage failed: stop feeding it
        self._queue.put(data if isinstance(data, bytes) else bytes(data))
        return len(data)

    def flush(self) -> None:
        """zstandard's stream writer flushes its sink; the real sink commits later."""

    def run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self.error is not None:
                continue  # keep draining, so that write() never blocks on a full queue
            try:
                self._hash.update(data)
                self._sink.write(data)
                self.size += len(data)
            except BaseException as e:
                self.error = e

    def stop(self) -> None:
        """Wait until every queued byte is written: storage must not be aborted or
        committed under a write in progress."""
        self._queue.put(None)
        self.join()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def sums_text(files: Sequence[FileEntry]) -> bytes:
    """The `SHA256SUMS` member, in `sha256sum -c` format."""
    return "".join(f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path)).encode()


def input_digest(
    files: Sequence[FileEntry], level: int, fmt: ArchiveFormat = ArchiveFormat.SUMS_FIRST
) -> str:
    """Names an archive by what goes into it, so a rebuild lands on the same key."""
    h = hashlib.sha256(f"{fmt.value}\nzstd-{level}\n".encode())
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
    open_file: Callable[[FileEntry], Source],
    sink: Sink,
    *,
    level: int = 3,
    threads: int = -1,
    xxh3: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    fmt: ArchiveFormat = ArchiveFormat.SUMS_FIRST,
) -> ArchiveResult:
    """Write the tar.zst of `files` to `sink`; `open_file` yields each file's bytes.
    `xxh3` maps a blob's sha256 to its recorded xxh3, the cheaper re-check; `progress`
    hears the input bytes as they are packed. In the SUMS_LAST format a file whose
    sha256 is "" is made as it is read (a streamed merge's shard): its digest is taken as
    it is packed, there being nothing to check it against."""
    entries = sorted(files, key=lambda f: f.path)
    if len({f.path for f in entries}) != len(entries) or any(f.path == SUMS_NAME for f in entries):
        raise ValueError("archive member paths must be unique and not SHA256SUMS")
    if fmt == ArchiveFormat.SUMS_FIRST and any(not f.sha256 for f in entries):
        raise ValueError("SHA256SUMS first needs every file's sha256 before packing")
    checks = xxh3 or {}
    out = _Writer(sink)
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    tar_size = 0
    try:
        with cctx.stream_writer(out, closefd=False, write_size=CHUNK) as z:  # type: ignore[arg-type]

            def emit(data: bytes | memoryview) -> None:
                nonlocal tar_size
                z.write(data)  # consumed before it returns: the buffer may be reused
                tar_size += len(data)

            def emit_sums(members: Sequence[FileEntry]) -> None:
                sums = sums_text(members)
                emit(_header(SUMS_NAME, len(sums)))
                emit(sums + _padding(len(sums)))

            if fmt == ArchiveFormat.SUMS_FIRST:
                emit_sums(entries)
            buf = memoryview(bytearray(CHUNK))
            packed = [_pack(e, open_file, emit, buf, checks, progress) for e in entries]
            if fmt == ArchiveFormat.SUMS_LAST:
                emit_sums(packed)
            emit(b"\0" * (2 * _BLOCK))
            emit(_padding(tar_size, _RECORD))
    finally:
        out.stop()
    if out.error is not None:
        raise out.error
    return ArchiveResult(sha256=out.hexdigest(), size=out.size, files=tuple(packed))


def _pack(
    entry: FileEntry,
    open_file: Callable[[FileEntry], Source],
    emit: Callable[[bytes | memoryview], None],
    buf: memoryview,
    checks: Mapping[str, str],
    progress: Callable[[int], None] | None,
) -> FileEntry:
    """One member, header and padded content, read through the reused `buf`; the entry
    with its sha256 (taken now for a file made as it is read)."""
    emit(_header(entry.path, entry.size))
    check: StoredCheck | MadeDigest = (
        StoredCheck(entry.sha256, checks.get(entry.sha256)) if entry.sha256 else MadeDigest()
    )
    _copy_verified(entry, open_file, emit, buf, check, progress)
    emit(_padding(entry.size))
    if isinstance(check, MadeDigest):
        return replace(entry, sha256=check.sha256())
    return entry


def _copy_verified(
    entry: FileEntry,
    open_file: Callable[[FileEntry], Source],
    emit: Callable[[bytes | memoryview], None],
    buf: memoryview,
    check: StoredCheck | MadeDigest,
    progress: Callable[[int], None] | None,
) -> None:
    seen = 0
    with open_file(entry) as f:
        while True:
            n = _read_into(f, buf)
            if not n:
                break
            chunk = buf[:n]
            check.update(chunk)
            seen += n
            if seen > entry.size:
                break
            emit(chunk)
            if progress is not None:
                progress(n)
    if isinstance(check, MadeDigest) and seen != entry.size:
        # A made file's bytes come from its maker (a merge), not from storage.
        made = f"{seen} bytes" if seen < entry.size else f"over {entry.size} bytes"
        raise IntegrityError(
            f"{entry.path!r} was made {made} long where its plan said {entry.size}; "
            "nothing was stored: report this with the server log"
        )
    if seen != entry.size or not check.ok():
        raise IntegrityError(
            f"stored content of {entry.path!r} does not match its manifest "
            f"(size {seen} vs {entry.size}); the blob is corrupt, re-push the checkpoint"
        )


def _read_into(f: Source, buf: memoryview) -> int:
    """Fill `buf` from `f` as far as it goes, without allocating (the stores' readers may
    return short reads)."""
    readinto = getattr(f, "readinto", None)
    if readinto is not None:
        got = 0
        while got < len(buf) and (n := readinto(buf[got:])):
            got += n
        return got
    data = f.read(len(buf))
    buf[: len(data)] = data
    return len(data)
