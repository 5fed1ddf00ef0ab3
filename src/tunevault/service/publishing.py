"""Publishing: validating manifests, committing checkpoints and base models, storing files.

The routes and the demo seeding share these functions, so every fine-tune enters the store
through the same checks: a manifest names only regular files at safe relative paths, each
backed by a blob that the publishing organization uploaded, with the size it uploaded.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tunevault.archive.checksums import BlobHasher
from tunevault.archive.write import SUMS_NAME
from tunevault.errors import Conflict, InvalidManifest, InvalidRequest
from tunevault.layout import blob_key
from tunevault.metadata import MetadataStore
from tunevault.models import BaseModel, Checkpoint, FileEntry, FineTune, JobKind, Kind
from tunevault.service.bases import require_base
from tunevault.service.context import Services
from tunevault.storage import Storage

CHUNK = 4 << 20
MAX_FILES = 100_000
MAX_PATH_BYTES = 1000
SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # always fullmatch: `$` matches before a final newline
MAX_NAME_BYTES = 255  # one path component: NAME_MAX of ext4, XFS and APFS
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not path:
        raise InvalidManifest("every file needs a non-empty string path", param="files")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise InvalidManifest(f"path longer than {MAX_PATH_BYTES} bytes: {path[:80]!r}...")
    if _BAD_CHARS.search(path):
        raise InvalidManifest(f"path {path[:200]!r} has a backslash or a control character")
    if path.startswith("/"):
        raise InvalidManifest(f"path {path[:200]!r} is absolute; paths are relative to the root")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise InvalidManifest(f"path {path[:200]!r} has an empty, '.' or '..' component")
    if any(len(part.encode()) > MAX_NAME_BYTES for part in path.split("/")):
        raise InvalidManifest(
            f"path {path[:80]!r}... has a component longer than {MAX_NAME_BYTES} bytes, "
            "which no common filesystem can extract; shorten that file or directory name"
        )
    if path == SUMS_NAME:
        raise InvalidManifest(f"{SUMS_NAME} is reserved: tunevault writes it into every archive")
    return path


def validate_manifest(raw: Any) -> list[FileEntry]:
    """Parse a JSON manifest into file entries, refusing anything unsafe or ambiguous."""
    if not isinstance(raw, list) or not raw:
        raise InvalidManifest(
            "files must be a non-empty list of {path, size, sha256}", param="files"
        )
    if len(raw) > MAX_FILES:
        raise InvalidManifest(f"a manifest holds at most {MAX_FILES} files", param="files")
    entries: list[FileEntry] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidManifest("every file must be an object {path, size, sha256}")
        path = _check_path(item.get("path"))
        kind = item.get("type", "file")
        if kind != "file":
            raise InvalidManifest(
                f"{path!r} is a {kind!s:.20}: only regular files can be published "
                "(no symlinks, devices or directories)"
            )
        size, sha = item.get("size"), item.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidManifest(f"{path!r} needs a non-negative integer size")
        if not isinstance(sha, str) or not SHA256_HEX.fullmatch(sha):
            raise InvalidManifest(f"{path!r} needs a sha256 of 64 lower-case hex digits")
        if path in seen:
            raise InvalidManifest(f"path {path!r} appears twice")
        seen.add(path)
        entries.append(FileEntry(path=path, size=size, sha256=sha))
    # NFC and case folded: macOS (APFS, HFS+) treats `café` composed and decomposed as one
    # name, as case-insensitive filesystems treat `A` and `a`.
    folded = {unicodedata.normalize("NFC", p).casefold() for p in seen}
    if len(folded) != len(seen):
        raise InvalidManifest(
            "two paths differ only in case or Unicode normalization (NFC/NFD); they would "
            "collide on extraction: rename one of them"
        )
    dirs = {p.rsplit("/", 1)[0] for p in seen if "/" in p}
    if clash := sorted(seen & {d for p in dirs for d in _prefixes(p)}):
        raise InvalidManifest(f"{clash[0]!r} is both a file and a directory")
    return sorted(entries, key=lambda e: e.path)


def _prefixes(directory: str) -> list[str]:
    parts = directory.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def check_blobs(
    store: MetadataStore, org_id: str, files: Sequence[FileEntry], *, confirm: bool = False
) -> None:
    """Every file must be a blob this organization uploaded, of the size it says.

    `confirm` reads under the gc lock: the check after a manifest commit (see tunevault.service.gc).
    """
    lookup = store.locked_blob_sizes if confirm else store.org_blob_sizes
    sizes = lookup(org_id, (f.sha256 for f in files))
    for f in files:
        if f.sha256 not in sizes:
            raise InvalidManifest(
                f"{f.path!r}: blob {f.sha256} was not uploaded; PUT /v1/publish/blobs/{f.sha256}"
            )
        if sizes[f.sha256] != f.size:
            raise InvalidManifest(
                f"{f.path!r}: size {f.size} differs from the uploaded blob ({sizes[f.sha256]})"
            )


def commit_checkpoint(
    svc: Services,
    ft: FineTune,
    *,
    step: int,
    kind: Kind,
    final: bool,
    files: Sequence[FileEntry],
) -> tuple[Checkpoint, bool]:
    """Record a checkpoint and queue its builds; the same manifest again is a no-op.

    Returns the checkpoint and whether it was created now. The final adapter of a LoRA
    fine-tune also gets its `merged` checkpoint, built by a merge job, unless its base lives
    elsewhere; else its base must be registered.
    """
    store = svc.store
    if kind == Kind.MERGED:
        raise InvalidRequest(
            "merged checkpoints are built by tunevault, not published", param="kind"
        )
    if (kind == Kind.ADAPTER) != ft.is_lora:
        want = "adapter" if ft.is_lora else "model_output_path"
        raise InvalidRequest(
            f"a {ft.training_type} fine-tune publishes {want} checkpoints", param="kind"
        )
    merges = ft.is_lora and not ft.external_base
    if merges:
        require_base(store, ft.org_id, ft.model)
    check_blobs(store, ft.org_id, files)
    created = True
    try:
        ckpt = store.add_checkpoint(ft.id, step, kind, final, files, jobs=(JobKind.ARCHIVE,))
    except sa.exc.IntegrityError:  # published before (a retry, or a concurrent twin)
        created = False
        existing = store.find_checkpoint(ft.id, step, kind)
        if existing is None:
            raise
        if existing.files != tuple(sorted(files, key=lambda f: f.path)) or existing.final != final:
            raise Conflict(
                f"step {step} of {ft.id} already has a different {kind.value} checkpoint"
            ) from None
        ckpt = existing
    try:  # gc may have collected a blob between the check and the commit
        check_blobs(store, ft.org_id, files, confirm=True)
    except InvalidManifest:
        if created:
            store.forget_checkpoint(ckpt.id)
        raise
    if merges and final:
        _ensure_merged(store, ft, step)
    return ckpt, created


def _ensure_merged(store: MetadataStore, ft: FineTune, step: int) -> None:
    if store.find_checkpoint(ft.id, step, Kind.MERGED) is None:
        # A concurrent commit of the same adapter may create it first: that is fine.
        with contextlib.suppress(sa.exc.IntegrityError):
            store.add_checkpoint(ft.id, step, Kind.MERGED, True, [], jobs=(JobKind.MERGE,))


def register_base_model(
    svc: Services, org_id: str, name: str, files: Sequence[FileEntry]
) -> tuple[BaseModel, bool]:
    """Register (or confirm) a base model, and wake the merges that waited for it."""
    store = svc.store
    if not name or len(name) > 300 or _BAD_CHARS.search(name):
        raise InvalidRequest("a base model name is 1-300 printable characters", param="name")
    check_blobs(store, org_id, files)
    existing = store.get_base_model(org_id, name)
    if existing is not None:
        if existing.files != tuple(sorted(files, key=lambda f: f.path)):
            raise Conflict(f"base model {name!r} is already registered with other files")
        return existing, False
    try:
        model = store.create_base_model(org_id, name, files)
    except sa.exc.IntegrityError:
        raise Conflict(f"base model {name!r} was registered concurrently; retry") from None
    try:  # gc may have collected a blob between the check and the commit
        check_blobs(store, org_id, files, confirm=True)
    except InvalidManifest:
        store.forget_base_model(model.id)
        raise
    store.requeue_failed("base_model_not_found", store.merged_checkpoints_for_base(org_id, name))
    return model, True


# Local files -> blobs (the demo, the worker's merge output) ---------------------------------


def file_digest(path: Path) -> tuple[int, BlobHasher]:
    h = BlobHasher()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h


def put_file(
    store: MetadataStore, storage: Storage, org_id: str, path: Path, name: str
) -> FileEntry:
    """Store a local file as a blob owned by the organization (skipped if stored)."""
    size, digests = file_digest(path)
    sha = digests.sha256()
    key = blob_key(sha)

    def ensure_stored() -> None:
        if storage.stat(key) is None:
            with storage.writer(key) as w, path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    w.write(chunk)

    ensure_stored()  # the long write outside the gc lock; again under it, in case gc took it
    store.record_stored_blob(sha, size, org_id, ensure_stored, digests.xxh3())
    return FileEntry(path=name, size=size, sha256=sha)


def directory_files(root: Path) -> list[tuple[Path, str]]:
    """Regular files under root with their relative paths; symlinks are refused."""
    found = []
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            raise InvalidManifest(f"{p} is a symlink; publish the file it points to instead")
        if p.is_file():
            found.append((p, p.relative_to(root).as_posix()))
        elif not p.is_dir():
            raise InvalidManifest(f"{p} is not a regular file")
    return found


def put_directory(
    store: MetadataStore, storage: Storage, org_id: str, root: Path
) -> list[FileEntry]:
    return [put_file(store, storage, org_id, p, name) for p, name in directory_files(root)]


def publish_directory(
    svc: Services,
    ft: FineTune,
    root: Path,
    *,
    step: int,
    kind: Kind,
    final: bool,
) -> Checkpoint:
    files = put_directory(svc.store, svc.storage, ft.org_id, root)
    return commit_checkpoint(svc, ft, step=step, kind=kind, final=final, files=files)[0]
