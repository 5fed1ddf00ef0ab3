"""A revision's files as the Hub lists them: folders, files, and their git object ids.

Every file is presented as a Git LFS file: its sha256 is what the store knows of it, and
the object id the Hub shows for an LFS file is the git blob id of its pointer, computed
here from (sha256, size) without reading the content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tunevault.errors import EntryNotFound
from tunevault.models import FileEntry
from tunevault.service.hub import commit_id


@dataclass(frozen=True)
class TreeEntry:
    path: str
    oid: str
    file: FileEntry | None  # None: a folder


def lfs_pointer(entry: FileEntry) -> bytes:
    """The Git LFS pointer file of the entry (what a git checkout of the repo would hold)."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{entry.sha256}\n"
        f"size {entry.size}\n"
    ).encode()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def file_oid(entry: FileEntry) -> str:
    return git_blob_id(lfs_pointer(entry))


def list_tree(
    files: tuple[FileEntry, ...], path: str, *, recursive: bool, commit: str
) -> list[TreeEntry]:
    """The entries under folder `path` ("" is the root): its children, or with `recursive`
    everything below it, folders included, sorted by path."""
    root = path.strip("/")
    prefix = root + "/" if root else ""
    under = [f for f in files if f.path.startswith(prefix)]
    if root and not under:
        raise EntryNotFound(
            f"no folder {root!r} at this revision", headers={"X-Repo-Commit": commit}
        )
    folders: dict[str, list[FileEntry]] = {}
    entries: list[TreeEntry] = []
    for f in under:
        parts = f.path[len(prefix) :].split("/")
        depth = len(parts) - 1 if recursive else min(len(parts) - 1, 1)
        for i in range(1, depth + 1):
            folders.setdefault(prefix + "/".join(parts[:i]), []).append(f)
        if recursive or len(parts) == 1:
            entries.append(TreeEntry(f.path, file_oid(f), f))
    # A folder's id names everything below it, like a git tree id does.
    entries += [TreeEntry(p, commit_id(fs), None) for p, fs in folders.items()]
    return sorted(entries, key=lambda e: e.path)
