"""Receiving blobs: per-organization staging files, appended and hashed as bytes arrive, and
the commit that moves a verified upload into storage and records it under the gc lock.

A staging file is flock-ed by the process appending to it (tunevault.storage.inuse), so
another server on this data dir or `tunevault gc` never touches a live one.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tunevault.archive.checksums import BlobHasher
from tunevault.errors import Conflict, InsufficientStorage
from tunevault.layout import blob_key, staging_part
from tunevault.service.context import Services, translated
from tunevault.storage import pagecache
from tunevault.storage.errors import StorageError
from tunevault.storage.inuse import claim

BUFFER = 1 << 20  # bytes per write+hash call off the event loop (BENCHMARKS.md, upload)


def owned_blob_sizes(svc: Services, org_id: str, digests: Iterable[str]) -> dict[str, int]:
    """The sizes of those blobs this organization has uploaded (others' are invisible)."""
    return svc.store.org_blob_sizes(org_id, digests)


def staged_offset(svc: Services, org_id: str, sha: str) -> int:
    """How many bytes of an interrupted upload are kept: where it resumes."""
    part = staging_path(svc, org_id, sha)
    return part.stat().st_size if part.exists() else 0


def staging_path(svc: Services, org_id: str, sha: str) -> Path:
    return staging_part(svc.settings.data_dir, org_id, sha)


def append(f: Any, hasher: BlobHasher, data: bytearray) -> None:
    try:
        pagecache.write_file(f, data)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("the server's upload disk is full") from e
        raise
    hasher.update(data)


def hash_prefix(path: Path) -> BlobHasher:
    hasher = BlobHasher()
    with path.open("rb") as f:
        while chunk := f.read(BUFFER):
            hasher.update(chunk)
    return hasher


def open_part(part: Path) -> Any:
    """The staging file, open for appending and locked: no other process (another server on
    this data dir, `tunevault gc`) touches it until we close it."""
    for _ in range(3):
        f = part.open("ab", buffering=0)
        if claim(f.fileno(), part):
            return f
        f.close()  # held elsewhere, or gc removed it between our open and our lock
    raise Conflict(f"another upload of blob {part.stem} is in progress; retry when it ends")


def commit_blob(svc: Services, org_id: str, sha: str, size: int, part: Path, xxh3: str) -> None:
    """Move a verified upload into storage and record it (InsufficientStorage if full)."""
    try:
        _commit(svc, org_id, sha, size, part, xxh3)
    except StorageError as e:
        raise translated(e) from e


def _commit(svc: Services, org_id: str, sha: str, size: int, part: Path, xxh3: str) -> None:
    key = blob_key(sha)
    if svc.storage.stat(key) is None:
        svc.storage.adopt_file(key, part)  # new bytes: the long copy outside the gc lock

    def ensure_stored() -> None:
        if svc.storage.stat(key) is None:  # collected since: our part has the bytes
            if not part.exists():
                raise Conflict(f"blob {sha} was collected while being stored; upload it again")
            svc.storage.adopt_file(key, part)

    svc.store.record_stored_blob(sha, size, org_id, ensure_stored, xxh3)
    part.unlink(missing_ok=True)  # stored for someone already: this organization proved it
