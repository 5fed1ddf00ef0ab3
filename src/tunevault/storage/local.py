"""Local-disk storage: keys are files under a root directory.

Writes go to a temporary file in `<root>/.tmp`, are fsynced, then renamed into place, so a
key is either absent or complete, whatever happens to the process. Long writes start the
disk writing as they go (sync_file_range), so the final fsync waits for the last few
MiB, not for the whole file (bench.build_stages).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import unquote, urlparse

from tunevault.storage import pagecache
from tunevault.storage.base import BlobReader, BlobStat, BlobWriter, Storage, check_key
from tunevault.storage.errors import StorageFull
from tunevault.storage.inuse import claim
from tunevault.storage.registry import register

WRITEBACK_EVERY = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2  # start writeback of dirty pages, do not wait for it


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None  # not Linux: the final fsync does all the work, as it would anyway
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return fn


_START_WRITEBACK = _sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing bytes [offset, offset + length) of `fd` to disk without waiting, so a
    final fsync waits for the last few MiB only. Advisory: a no-op off Linux."""
    if _START_WRITEBACK is not None:
        _START_WRITEBACK(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _install(tmp: Path, final: Path) -> None:
    """Rename a complete, fsynced file into place and make the new name durable."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(final)
    # The rename lives in the directory: without its fsync a crash can lose the name
    # while the database already records the key.
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _RangeReader:
    """A read-only view of bytes [start, end) of a file."""

    def __init__(self, f: BinaryIO, start: int, end: int | None) -> None:
        self._f = f
        f.seek(start)
        self._left = None if end is None else max(0, end - start)

    def read(self, n: int = -1) -> bytes:
        if self._left is not None:
            n = self._left if n < 0 else min(n, self._left)
        data = self._f.read(n)
        if self._left is not None:
            self._left -= len(data)
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Straight into the caller's buffer: an archive build reads every blob through one
        reused buffer, without a fresh bytes object (faulted in, then copied) per read."""
        view = memoryview(buf) if self._left is None else memoryview(buf)[: self._left]
        n = cast(io.BufferedReader, self._f).readinto(view)  # open_read's file
        if self._left is not None:
            self._left -= n
        return n

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LocalWriter(BlobWriter):
    def __init__(self, final: Path, tmp_dir: Path) -> None:
        super().__init__()
        self._final = final
        for _ in range(3):  # locked while we write: `tunevault gc` takes only dead writers' files
            fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="w-")
            if claim(fd, Path(name)):
                break
            os.close(fd)  # gc took it between its creation and our lock: make another
            Path(name).unlink(missing_ok=True)
        else:
            raise OSError(f"could not lock a temporary file in {tmp_dir}")
        self._tmp = Path(name)
        self._f = os.fdopen(fd, "wb")
        self._written_back = 0  # bytes whose writeback was started
        self._done = False
        self._aborted = False
        self._failure: StorageFull | None = None

    def write(self, data: bytes | memoryview) -> int:
        if self._failure is not None:
            # A stream above us (zstd, tar) flushes again while unwinding: repeat the cause,
            # not "write to closed file", so the job fails as a full disk.
            raise self._failure
        try:
            n = pagecache.write_file(self._f, data)
        except OSError as e:
            self.abort()
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                self._failure = StorageFull("the storage disk is full")
                raise self._failure from e
            raise
        self.size += n
        if _START_WRITEBACK is not None and self.size - self._written_back >= WRITEBACK_EVERY:
            self._f.flush()
            # Advisory: a failure here only means the final fsync has more to do.
            _START_WRITEBACK(
                self._f.fileno(),
                self._written_back,
                self.size - self._written_back,
                _SYNC_FILE_RANGE_WRITE,
            )
            self._written_back = self.size
        return n

    def commit(self) -> None:
        if self._done:
            if self._aborted:
                raise ValueError("commit after abort: nothing was stored")
            return
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            _install(self._tmp, self._final)
        except OSError as e:
            self.abort()
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull("the storage disk is full") from e
            raise
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = self._aborted = True
        with contextlib.suppress(OSError):
            self._f.close()
        self._tmp.unlink(missing_ok=True)


class LocalStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._root = str(self.root)
        self.url = self.root.as_uri()
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_url(cls, url: str) -> LocalStorage:
        return cls(Path(unquote(urlparse(url).path)))

    def _checked(self, key: str) -> str:
        if check_key(key).split("/", 1)[0] == ".tmp":
            raise ValueError(f"invalid storage key: {key!r} (reserved for pending writes)")
        return key

    def _path(self, key: str) -> Path:
        return self.root / self._checked(key)

    def stat(self, key: str) -> BlobStat | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return BlobStat(size=st.st_size) if stat.S_ISREG(st.st_mode) else None

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BlobReader:
        f = self._path(key).open("rb")
        return _RangeReader(f, start, end)

    def writer(self, key: str) -> BlobWriter:
        return _LocalWriter(self._path(key), self._tmp)

    def adopt_file(self, key: str, path: Path) -> None:
        final = self._path(key)
        try:
            with path.open("rb") as f:
                os.fsync(f.fileno())
            _install(path, final)  # same filesystem: no second copy of a multi-GB blob
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            super().adopt_file(key, path)

    def scratch_paths(self) -> Iterator[Path]:
        return self._tmp.iterdir()

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if d != ".tmp"]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def local_path(self, key: str) -> str:
        return f"{self._root}/{self._checked(key)}"  # asked per download: no Path built


register("file", LocalStorage.from_url)
