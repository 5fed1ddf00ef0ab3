"""The tree listing's folders, and the commit ids that name manifests."""

from __future__ import annotations

import hashlib

import pytest

from tunevault.errors import EntryNotFound
from tunevault.models import FileEntry
from tunevault.service.hub import commit_id
from tunevault.service.hub_tree import file_oid, lfs_pointer, list_tree


def _entry(path: str, data: bytes = b"x") -> FileEntry:
    return FileEntry(path, len(data), hashlib.sha256(data).hexdigest())


FILES = tuple(
    _entry(p) for p in ("a/b/c.bin", "a/d.json", "config.json", "tokenizer/tokenizer.json", "z.bin")
)


def _listed(path: str, recursive: bool) -> list[tuple[str, bool]]:
    entries = list_tree(FILES, path, recursive=recursive, commit="0" * 40)
    return [(e.path, e.file is None) for e in entries]


def test_children_or_everything_below() -> None:
    assert _listed("", recursive=False) == [
        ("a", True),
        ("config.json", False),
        ("tokenizer", True),
        ("z.bin", False),
    ]
    assert _listed("a", recursive=False) == [("a/b", True), ("a/d.json", False)]
    assert _listed("a", recursive=True) == [
        ("a/b", True),
        ("a/b/c.bin", False),
        ("a/d.json", False),
    ]
    assert [p for p, folder in _listed("", recursive=True) if not folder] == [f.path for f in FILES]


def test_a_missing_folder_is_entry_not_found() -> None:
    for path in ("nope", "a/b/c.bin", "a/b/c"):
        with pytest.raises(EntryNotFound):
            list_tree(FILES, path, recursive=False, commit="0" * 40)


def test_ids_follow_the_content() -> None:
    assert commit_id(FILES) == commit_id(tuple(reversed(FILES)))
    assert commit_id(FILES) != commit_id(FILES[1:])
    renamed = (FileEntry("other.json", FILES[0].size, FILES[0].sha256), *FILES[1:])
    assert commit_id(FILES) != commit_id(renamed)
    # An LFS file's oid is the git blob id of its pointer, as `git hash-object` gives it.
    pointer = lfs_pointer(FILES[0])
    assert file_oid(FILES[0]) == hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
    assert pointer.startswith(b"version https://git-lfs.github.com/spec/v1\noid sha256:")
