"""Putting files into the store: content-addressed blobs and checkpoint manifests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from tunevault.metadata import MetadataStore
from tunevault.models import Checkpoint, FileEntry, Kind
from tunevault.storage import Storage
from tunevault.storage.base import blob_key

CHUNK = 4 << 20


def file_digest(path: Path) -> FileEntry:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return FileEntry(path=path.name, size=size, sha256=h.hexdigest())


def put_file(store: MetadataStore, storage: Storage, path: Path, name: str) -> FileEntry:
    """Store one file as a blob (skipped when the blob is already there)."""
    entry = file_digest(path)
    key = blob_key(entry.sha256)
    if storage.stat(key) is None:
        with storage.writer(key) as w, path.open("rb") as f:
            while chunk := f.read(CHUNK):
                w.write(chunk)
    store.record_blob(entry.sha256, entry.size)
    return FileEntry(path=name, size=entry.size, sha256=entry.sha256)


def directory_files(root: Path) -> list[tuple[Path, str]]:
    """Regular files under root with their archive paths; links and specials are skipped."""
    return sorted(
        (
            (p, p.relative_to(root).as_posix())
            for p in root.rglob("*")
            if p.is_file() and not p.is_symlink()
        ),
        key=lambda item: item[1],
    )


def publish_directory(
    store: MetadataStore,
    storage: Storage,
    ft_id: str,
    root: Path,
    *,
    step: int,
    kind: Kind,
    final: bool,
) -> Checkpoint:
    files: Sequence[FileEntry] = [
        put_file(store, storage, path, name) for path, name in directory_files(root)
    ]
    return store.add_checkpoint(ft_id, step, kind, final, files)
