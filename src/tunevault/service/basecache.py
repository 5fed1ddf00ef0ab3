"""A bounded local cache of base models, for merges on object storage.

On S3 every merge used to fetch its whole base model again (gigabytes for the 50 MB
adapter it merges). The cache keeps base blobs on local disk under a size budget, least
recently used first out, so consecutive merges on one base fetch nothing.

Layout: `<dir>/sha256/<hex>` per blob, `<dir>/.tmp/` for fetches in progress, `<dir>/.lock`.
Fetching and eviction happen under an exclusive flock of `.lock`, so workers of any number
of processes never evict under each other's fetch nor exceed the budget. A fetched blob is
checked against its sha256 and fsynced before its atomic rename into place; a crash leaves
at most a `.tmp` file, cleared at the next fetch. A merge takes hard links to the cached
files: an eviction during the merge then only drops the cache's name, and the merge still
reads every byte (the disk space is freed when the merge ends).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tunevault.errors import IntegrityError
from tunevault.layout import blob_key
from tunevault.models import FileEntry
from tunevault.storage import Storage, pagecache

CHUNK = 4 << 20


class BaseCache:
    def __init__(self, root: Path, budget_bytes: int) -> None:
        self.root = root
        self.budget = budget_bytes
        self._blobs = root / "sha256"
        self._tmp = root / ".tmp"

    def materialize(self, storage: Storage, files: tuple[FileEntry, ...], dst: Path) -> int:
        """Lay `files` out under `dst` from the cache, fetching what it lacks; the bytes
        fetched from storage. A base larger than the whole budget is fetched into `dst`
        without being cached."""
        cacheable = sum(f.size for f in files) <= self.budget
        fetched = 0
        for f in files:
            out = dst / f.path
            out.parent.mkdir(parents=True, exist_ok=True)
            if not cacheable:
                _fetch(storage, f, out)
                fetched += f.size
            elif not self._link(f, out):
                fetched += self._fill(storage, f, out, keep={g.sha256 for g in files})
        return fetched

    def _link(self, f: FileEntry, out: Path) -> bool:
        """Link a cached blob to `out`; False when it is not cached. Without a lock: once
        linked, the bytes are ours whatever an eviction does."""
        cached = self._blobs / f.sha256
        try:
            _link_or_copy(cached, out)
        except FileNotFoundError:
            return False
        with contextlib.suppress(FileNotFoundError):  # evicted after our link: ours stands
            os.utime(cached)  # recently used: last out
        return True

    def _fill(self, storage: Storage, f: FileEntry, out: Path, keep: set[str]) -> int:
        with self._locked():
            if self._link(f, out):  # another worker fetched it while we waited
                return 0
            self._evict(f.size, keep)
            part = self._tmp / f"{f.sha256}.part"
            _fetch(storage, f, part)
            self._blobs.mkdir(parents=True, exist_ok=True)
            part.replace(self._blobs / f.sha256)
            _link_or_copy(self._blobs / f.sha256, out)
            return f.size

    def _evict(self, needed: int, keep: set[str]) -> None:
        """Drop least recently used blobs until `needed` more bytes fit the budget."""
        entries = []
        for p in self._blobs.glob("*") if self._blobs.is_dir() else ():
            st = p.stat()
            entries.append((st.st_mtime, p, st.st_size))
        used = sum(size for _, _, size in entries)
        for _, path, size in sorted(entries):
            if used + needed <= self.budget:
                break
            if path.name not in keep:
                path.unlink(missing_ok=True)
                used -= size

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._blobs.glob("*")) if self._blobs.is_dir() else 0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for stale in self._tmp.iterdir():  # a dead holder's fetch: we hold the lock now
                stale.unlink(missing_ok=True)
            yield
        finally:
            os.close(fd)


def _fetch(storage: Storage, f: FileEntry, out: Path) -> None:
    """Copy a blob out of storage, checking its sha256 before anyone sees it."""
    h = hashlib.sha256()
    size = 0
    try:
        with storage.open_read(blob_key(f.sha256)) as src, out.open("wb") as dst:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                pagecache.write_file(dst, chunk)
                size += len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        if size != f.size or h.hexdigest() != f.sha256:
            raise IntegrityError(
                f"stored content of base model file {f.path!r} does not match its manifest; "
                "the blob is corrupt, push the base model again"
            )
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:  # another filesystem than the merge's scratch
            raise
        shutil.copyfile(src, dst)
