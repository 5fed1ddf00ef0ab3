"""Archive builds: a checkpoint's manifest of blobs -> one deterministic tar.zst blob."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from tunevault.archive.write import Source, input_digest, write_archive
from tunevault.layout import archive_key, blob_key
from tunevault.metadata import MetadataStore
from tunevault.models import Archive, Checkpoint, FileEntry
from tunevault.service.adapterconfig import archive_overrides, replaced
from tunevault.storage import Storage


def archive_key_of(files: tuple[FileEntry, ...], level: int) -> str:
    return archive_key(input_digest(files, level))


def build_archive(
    store: MetadataStore,
    storage: Storage,
    checkpoint: int | Checkpoint,
    *,
    level: int = 3,
    threads: int = -1,
    progress: Callable[[int], None] | None = None,
    local_root: Path | None = None,
) -> Archive:
    """Build and record the archive of a checkpoint, given by id or as read with its files
    (the worker's); a crash leaves no visible archive. A file also present under
    `local_root` (a merge's scratch output, the same bytes as its blob) is read there."""
    ckpt = store.get_checkpoint(checkpoint) if isinstance(checkpoint, int) else checkpoint
    if ckpt is None:
        raise LookupError(f"checkpoint {checkpoint} does not exist")

    overrides = archive_overrides(store, storage, ckpt)  # an adapter names its base
    files = replaced(ckpt.files, overrides)

    def open_file(entry: FileEntry) -> Source:
        if entry.path in overrides:
            return io.BytesIO(overrides[entry.path])
        if local_root is not None and (local_root / entry.path).is_file():
            return (local_root / entry.path).open("rb")
        return storage.open_read(blob_key(entry.sha256))

    key = archive_key_of(files, level)
    xxh3 = store.blob_xxh3(f.sha256 for f in ckpt.files)
    for _ in range(3):
        with storage.writer(key) as sink:
            result = write_archive(
                files,
                open_file,
                sink,
                level=level,
                threads=threads,
                xxh3=xxh3,
                progress=progress,
            )
        archive = store.set_archive(ckpt.id, key, result.sha256, result.size)
        # gc deletes archive keys no row points to: confirm ours survived the moment between
        # the write and the row (see tunevault.service.gc), or build it again.
        with store.gc_lock():
            if storage.stat(key) is not None:
                return archive
    raise RuntimeError(f"the archive {key} was collected three times while being recorded")
