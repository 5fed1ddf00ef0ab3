"""The Storage interface: a handful of verbs over opaque keys.

Keys are relative slash-separated names (`blobs/sha256/ab/<hex>`); storage never knows
about fine-tunes, HTTP or SQL. A write is atomic: the key becomes visible only when the
writer commits, and a writer that is abandoned or fails leaves nothing behind.
Optional capabilities (`local_path`, `presigned_url`) raise `Unsupported` explicitly.
"""

from __future__ import annotations

import abc
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class Unsupported(Exception):
    """The backend does not offer this optional capability."""


@dataclass(frozen=True)
class BlobStat:
    size: int


@functools.lru_cache(maxsize=4096)  # every download asks for its key: a refusal is not kept
def check_key(key: str) -> str:
    """Refuse keys that could escape a directory or prefix (`..`, absolute, odd bytes)."""
    if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key: {key!r}")
    return key


class BlobReader(Protocol):
    """What `open_read` returns: bytes in order, closed by `with`."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> BlobReader: ...

    def __exit__(self, t: Any, v: Any, tb: Any, /) -> None: ...


class BlobWriter(abc.ABC):
    """A pending write: `write` bytes, then `commit` to publish them under the key.

    Used as a context manager, it commits on a clean exit and aborts on an exception.
    """

    def __init__(self) -> None:
        self.size = 0

    @abc.abstractmethod
    def write(self, data: bytes | memoryview) -> int: ...

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None: ...

    def writable(self) -> bool:
        return True

    def flush(self) -> None:  # noqa: B027 - deliberately a no-op, not abstract
        """File-like no-op so a writer can sit under zstd or tarfile streams."""

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class Storage(abc.ABC):
    """A blob store. Implementations: `LocalStorage` (file://), `S3Storage` (s3://)."""

    url: str

    @abc.abstractmethod
    def stat(self, key: str) -> BlobStat | None:
        """Size of a committed key, or None when it does not exist."""

    @abc.abstractmethod
    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BlobReader:
        """A file-like reader over bytes [start, end) of the key. Raises FileNotFoundError."""

    def iter_range(
        self, key: str, start: int = 0, end: int | None = None, chunk: int = 1 << 20
    ) -> Iterator[bytes]:
        with self.open_read(key, start, end) as f:
            while data := f.read(chunk):
                yield data

    @abc.abstractmethod
    def writer(self, key: str) -> BlobWriter:
        """Start an atomic write of the key (an existing key is replaced on commit)."""

    def put(self, key: str, data: bytes) -> None:
        with self.writer(key) as w:
            w.write(data)

    def adopt_file(self, key: str, path: Path) -> None:
        """Commit a complete local file under the key, consuming the file.

        The default streams it through `writer`; backends on the same disk rename it.
        """
        with self.writer(key) as w, path.open("rb") as f:
            while chunk := f.read(8 << 20):
                w.write(chunk)
        path.unlink()

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the key; True when it existed."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Committed keys that start with the prefix, in lexicographic order."""

    def probe_write(self, key: str) -> None:
        """Write and delete `key`: raises unless the storage takes writes now (readiness)."""
        self.put(key, b"ready")
        self.delete(key)

    def local_path(self, key: str) -> str:
        """A filesystem path of the committed key (for sendfile and X-Accel-Redirect)."""
        raise Unsupported(f"{type(self).__name__} has no local paths")

    def presigned_url(
        self,
        key: str,
        *,
        method: str = "GET",
        expires: int = 300,
        filename: str | None = None,
    ) -> str:
        """A time-limited URL that lets a client fetch the key without our credentials."""
        raise Unsupported(f"{type(self).__name__} cannot presign URLs")

    def use_presign_identity(self, access_key_id: str, secret_access_key: str) -> None:
        """Sign presigned URLs with this identity instead of the one that reads and writes:
        every URL shows its key id, so it should be one that may only read."""
        raise Unsupported(f"{type(self).__name__} cannot presign URLs")

    def abort_stale_writes(self, started_before: datetime, *, dry_run: bool) -> int:
        """Abort writes that dead processes left pending inside the store, started before
        the cutoff; returns how many. Backends whose pending writes are plain files (local
        `.tmp`) have none here: they list them in `scratch_paths`, and gc removes them."""
        return 0

    def scratch_paths(self) -> Iterator[Path]:
        """Local files of pending writes, live or left by dead processes: gc removes those
        no live writer holds (tunevault.storage.inuse). The default store keeps none."""
        return iter(())

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default holds none."""
