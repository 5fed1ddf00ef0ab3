"""Archive builds: a checkpoint's manifest of blobs -> one deterministic tar.zst blob."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tunevault.archive.write import Source, input_digest, sums_text, write_archive
from tunevault.errors import RebuildMismatch
from tunevault.layout import archive_key, blob_key
from tunevault.metadata import MetadataStore
from tunevault.models import Archive, ArchiveFormat, Checkpoint, FileEntry
from tunevault.service.adapterconfig import archive_overrides, replaced
from tunevault.storage import Storage


def archive_key_of(files: tuple[FileEntry, ...], level: int) -> str:
    return archive_key(input_digest(files, level))


def merged_archive_key(
    checkpoint_id: int,
    adapter: tuple[FileEntry, ...],
    base: tuple[FileEntry, ...],
    level: int,
) -> str:
    """The key of a merged archive packed as it is merged: its files' digests are known
    only once it is written, so it is named by what it is made from (a base pushed again
    gives a new key, never new bytes under a key a download may be reading)."""
    fmt = ArchiveFormat.SUMS_LAST
    h = hashlib.sha256(f"{fmt.value}\nzstd-{level}\nmerged {checkpoint_id}\n".encode())
    h.update(b"adapter\n" + sums_text(adapter) + b"base\n" + sums_text(base))
    return archive_key(h.hexdigest())


@dataclass(frozen=True)
class LocalCopy:
    """A checkpoint's files not (or not only) in storage: a streamed merge's. Those under
    `root` are read there, those in `streamed` from their opener (the merged shards, made
    as they are read); `xxh3` holds every file's digest, taken by the merge."""

    root: Path
    xxh3: Mapping[str, str]
    streamed: Mapping[str, Callable[[], Source]] = field(default_factory=dict)


def build_archive(
    store: MetadataStore,
    storage: Storage,
    checkpoint: int | Checkpoint,
    *,
    level: int = 3,
    threads: int = -1,
    progress: Callable[[int], None] | None = None,
    local: LocalCopy | None = None,
    fmt: ArchiveFormat = ArchiveFormat.SUMS_FIRST,
    key: str | None = None,
) -> Archive:
    """Build and record the archive of a checkpoint, given by id or as read with its files
    (the worker's); a crash leaves no visible archive. Files whose sha256 is "" are made
    as they are packed (a streamed merge's shards, `fmt` SUMS_LAST, `key` named by the
    merge's inputs): the checkpoint's manifest is recorded with their digests, then the
    archive."""
    ckpt = store.get_checkpoint(checkpoint) if isinstance(checkpoint, int) else checkpoint
    if ckpt is None:
        raise LookupError(f"checkpoint {checkpoint} does not exist")

    overrides = archive_overrides(store, storage, ckpt)  # an adapter names its base
    files = replaced(ckpt.files, overrides)
    open_file = _opener(storage, overrides, local)
    key = key or archive_key_of(files, level)
    xxh3 = dict(local.xxh3) if local else store.blob_xxh3(f.sha256 for f in ckpt.files if f.sha256)
    gone = store.evicted_archive(ckpt.id)  # an evicted archive comes back bit for bit
    expected = None if gone is None else gone.sha256
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
                fmt=fmt,
            )
            if expected is not None and result.sha256 != expected:  # raised: nothing stored
                raise _mismatch(ckpt, result.sha256, expected)
        if any(not f.sha256 for f in files):
            store.set_checkpoint_files(ckpt.id, result.files)
        # gc deletes archive keys no row names: the row is recorded under its lock, once
        # the bytes are confirmed there (tunevault.service.gc); else they went: build again.
        archive = store.record_archive(
            ckpt.id, key, result.sha256, result.size, lambda: storage.stat(key) is not None, fmt
        )
        if archive is not None:
            return archive
    raise RuntimeError(f"the archive {key} was collected three times while being recorded")


def _opener(
    storage: Storage, overrides: Mapping[str, bytes], local: LocalCopy | None
) -> Callable[[FileEntry], Source]:
    """Where each file of a build is read: rewritten in memory, streamed, a local copy or
    its blob."""

    def open_file(entry: FileEntry) -> Source:
        if entry.path in overrides:
            return io.BytesIO(overrides[entry.path])
        if local is not None and entry.path in local.streamed:
            return local.streamed[entry.path]()
        if local is not None and (local.root / entry.path).is_file():
            return (local.root / entry.path).open("rb")
        return storage.open_read(blob_key(entry.sha256))

    return open_file


def _mismatch(ckpt: Checkpoint, got: str, expected: str) -> RebuildMismatch:
    return RebuildMismatch(
        f"the rebuilt {ckpt.kind.value} archive of {ckpt.ft_id} step {ckpt.step} "
        f"has sha256 {got}, not the {expected} it had before it was "
        "evicted: its inputs changed (a base model pushed again?); not served"
    )
