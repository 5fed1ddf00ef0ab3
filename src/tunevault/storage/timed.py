"""Timing every storage call at the interface, whatever the backend.

`TimedStorage` wraps any `Storage` and reports `(operation, seconds)` for each verb to an
observer (the process's latency histogram): one place measures local disk and S3 alike,
and a new backend is measured without code of its own. A read is timed to its first
byte (`open_read`): the rest runs at the client's pace. A write is timed at its commit,
where a backend does its slow part (the rename, the PutObject or the multipart completion).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from tunevault.storage.base import BlobReader, BlobStat, BlobWriter, Storage

Observer = Callable[[str, float], None]
T = TypeVar("T")


class _TimedWriter(BlobWriter):
    def __init__(self, inner: BlobWriter, observe: Observer) -> None:
        super().__init__()
        self.inner, self.observe = inner, observe

    def write(self, data: bytes | memoryview) -> int:
        n = self.inner.write(data)
        self.size = self.inner.size
        return n

    def commit(self) -> None:
        started = time.perf_counter()
        try:
            self.inner.commit()
        finally:
            self.observe("commit", time.perf_counter() - started)

    def abort(self) -> None:
        self.inner.abort()


class TimedStorage(Storage):
    def __init__(self, inner: Storage, observe: Observer) -> None:
        self.inner, self.observe = inner, observe
        self.url = inner.url

    def _timed(self, operation: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.observe(operation, time.perf_counter() - started)

    def stat(self, key: str) -> BlobStat | None:
        return self._timed("stat", lambda: self.inner.stat(key))

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BlobReader:
        return self._timed("open_read", lambda: self.inner.open_read(key, start, end))

    def writer(self, key: str) -> BlobWriter:
        return _TimedWriter(self.inner.writer(key), self.observe)

    def adopt_file(self, key: str, path: Path) -> None:
        self._timed("adopt_file", lambda: self.inner.adopt_file(key, path))

    def delete(self, key: str) -> bool:
        return self._timed("delete", lambda: self.inner.delete(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        started = time.perf_counter()  # to the last key: a listing is paged as it is read
        try:
            yield from self.inner.list(prefix)
        finally:
            self.observe("list", time.perf_counter() - started)

    def probe_write(self, key: str) -> None:
        self._timed("probe_write", lambda: self.inner.probe_write(key))

    def local_path(self, key: str) -> str:
        return self.inner.local_path(key)

    def presigned_url(
        self,
        key: str,
        *,
        method: str = "GET",
        expires: int = 300,
        filename: str | None = None,
    ) -> str:
        return self._timed(
            "presign",
            lambda: self.inner.presigned_url(
                key, method=method, expires=expires, filename=filename
            ),
        )

    def use_presign_identity(self, access_key_id: str, secret_access_key: str) -> None:
        self.inner.use_presign_identity(access_key_id, secret_access_key)

    def abort_stale_writes(self, started_before: datetime, *, dry_run: bool) -> int:
        return self.inner.abort_stale_writes(started_before, dry_run=dry_run)

    def scratch_paths(self) -> Iterator[Path]:
        return self.inner.scratch_paths()

    def close(self) -> None:
        self.inner.close()
