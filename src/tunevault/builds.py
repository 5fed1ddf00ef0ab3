"""Archive builds: a checkpoint's manifest of blobs -> one deterministic tar.zst blob."""

from __future__ import annotations

from typing import BinaryIO

from tunevault.archive import input_digest, write_archive
from tunevault.metadata import MetadataStore
from tunevault.models import Archive, FileEntry
from tunevault.storage import Storage
from tunevault.storage.base import blob_key


def archive_key(files: tuple[FileEntry, ...], level: int) -> str:
    return f"archives/{input_digest(files, level)}.tar.zst"


def build_archive(
    store: MetadataStore,
    storage: Storage,
    checkpoint_id: int,
    *,
    level: int = 3,
    threads: int = -1,
) -> Archive:
    """Build and record the archive of a checkpoint; a crash leaves no visible archive."""
    ckpt = store.get_checkpoint(checkpoint_id)
    if ckpt is None:
        raise LookupError(f"checkpoint {checkpoint_id} does not exist")

    def open_file(entry: FileEntry) -> BinaryIO:
        return storage.open_read(blob_key(entry.sha256))

    key = archive_key(ckpt.files, level)
    with storage.writer(key) as sink:
        result = write_archive(ckpt.files, open_file, sink, level=level, threads=threads)
    return store.set_archive(ckpt.id, key, result.sha256, result.size)
