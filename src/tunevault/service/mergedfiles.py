"""A merge's inputs and, when asked, its outputs as blobs.

The base model is read where it lies: local blobs are linked, and on object storage the
bounded base cache (tunevault.service.basecache) serves consecutive merges on one base.
The merged files become blobs only for a `merge_files` job (the Hub protocol reads them
one by one; the archive is streamed from the merge, tunevault.service.mergestream). The
merge hashes every file as it writes it (`merge_lora(hash_outputs=True)`), so storing them
needs no re-read: on local storage each file is renamed into the blob store, on object
storage it is uploaded under its known key.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tunevault.layout import blob_key
from tunevault.merge import OutputFile
from tunevault.metadata import MetadataStore
from tunevault.models import FileEntry
from tunevault.service.basecache import BaseCache
from tunevault.service.context import Services
from tunevault.storage import Storage, Unsupported

CHUNK = 8 << 20


def lay_out_base(svc: Services, files: tuple[FileEntry, ...], root: Path) -> int:
    """The base model as a directory under `root`; the bytes fetched from storage."""
    storage, settings = svc.storage, svc.settings
    if is_local(storage):
        link_blobs(storage, files, root)
        return 0
    cache = BaseCache(settings.resolved_base_cache_dir(), int(settings.base_cache_gib * 2**30))
    return cache.materialize(storage, files, root)


def link_blobs(storage: Storage, files: tuple[FileEntry, ...], root: Path) -> None:
    """Symlinks to local blobs (the merge reads them in place)."""
    for f in files:
        dst = root / f.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(storage.local_path(blob_key(f.sha256)))


def store_outputs(
    store: MetadataStore, storage: Storage, org_id: str, root: Path, outputs: tuple[OutputFile, ...]
) -> list[FileEntry]:
    """Record every output file as a blob of the organization, with the digests the merge
    took while writing it."""
    local = is_local(storage)
    for out in outputs:
        key = blob_key(out.sha256)
        path = root / out.path

        def ensure_stored(key: str = key, path: Path = path) -> None:
            if storage.stat(key) is not None:
                return
            if not path.exists():  # renamed into storage, then collected by gc: merge again
                raise RuntimeError(f"gc collected the merged blob {key} as it was stored")
            if local:
                storage.adopt_file(key, path)  # a rename: no copy, no re-read
            else:
                _upload(storage, key, path)

        ensure_stored()  # the long write outside the gc lock; again under it, in case gc took it
        store.record_stored_blob(out.sha256, out.size, org_id, ensure_stored, out.xxh3)
    return [FileEntry(path=o.path, size=o.size, sha256=o.sha256) for o in outputs]


def _upload(storage: Storage, key: str, path: Path) -> None:
    """Upload a scratch file (removed with its scratch directory)."""
    with storage.writer(key) as w, path.open("rb") as f:
        shutil.copyfileobj(f, w, CHUNK)


def is_local(storage: Storage) -> bool:
    """Whether blobs are files on this machine (local storage)."""
    try:
        storage.local_path(blob_key("0" * 64))
    except Unsupported:
        return False
    return True
