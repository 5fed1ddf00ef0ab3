"""A safe, streaming reader of tunevault's tar.zst archives (the writer is archive/write.py).

Bytes go in once, in order, from any `read(n)` source (a network stream, a file), and
come out as regular files (SHA256SUMS included, as tar gives it) under a destination
directory; the archive itself never lands on disk. `SHA256SUMS` must be the first member
or the last (tunevault.models.ArchiveFormat): every file is hashed while it is written and
must match its line there, and every line must be matched by a file. With `SHA256SUMS`
last the files are checked when it arrives, before the caller keeps any of them.

Anything that could write outside the destination or surprise a later reader is refused
before a byte of it is written: absolute paths, `..` or `.` or empty components, links of
any kind, devices, FIFOs, sparse members, duplicate names and file/directory clashes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import zstandard

from tunevault.archive.write import SUMS_NAME
from tunevault.errors import IntegrityError
from tunevault.storage import pagecache

MAX_SUMS_BYTES = 16 << 20
MAX_NAME_BYTES = 255  # NAME_MAX: a longer component fails open() with ENAMETOOLONG
CHUNK = 1 << 20
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


class Source(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class UnsafeArchive(IntegrityError):
    """The archive holds a member that cannot be extracted safely; nothing was kept."""

    code = "unsafe_archive"
    client_side = True


@dataclass
class UnpackResult:
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256, as verified


def check_member_path(name: str) -> str:
    """The member's relative POSIX path, or UnsafeArchive."""
    if not name or "\0" in name or "\\" in name:
        raise UnsafeArchive(f"unsafe member name {name[:200]!r}")
    if name.startswith("/"):
        raise UnsafeArchive(f"absolute member path {name[:200]!r}")
    parts = name.removesuffix("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeArchive(f"member path {name[:200]!r} has an empty, '.' or '..' component")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for p in parts):
        raise UnsafeArchive(
            f"member path {name[:80]!r}... has a component longer than {MAX_NAME_BYTES} "
            "bytes, which this filesystem cannot create; download without --extract"
        )
    return "/".join(parts)


def parse_sums(text: bytes) -> dict[str, str]:
    sums: dict[str, str] = {}
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise IntegrityError(f"{SUMS_NAME} is not UTF-8 text") from e
    for line in lines:
        m = _SUMS_LINE.match(line)
        if not m:
            raise IntegrityError(f"malformed {SUMS_NAME} line {line[:200]!r}")
        path = check_member_path(m.group(2))
        if path in sums or path == SUMS_NAME:
            raise UnsafeArchive(f"{SUMS_NAME} lists {path!r} twice")
        sums[path] = m.group(1)
    return sums


class _Tree:
    """What has been created under the destination, to refuse clashes and duplicates."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: set[str] = set()
        self.dirs: set[str] = set()

    def claim(self, path: str, *, is_dir: bool) -> Path:
        # `dirs` holds every parent of every claimed path, so this also refuses a file
        # where a directory with contents already is.
        if path in self.files or (path in self.dirs and not is_dir):
            raise UnsafeArchive(f"duplicate member {path!r}")
        parents = path.split("/")[:-1]
        for i in range(1, len(parents) + 1):
            parent = "/".join(parents[:i])
            if parent in self.files:
                raise UnsafeArchive(f"member {path!r} would go under the file {parent!r}")
            self.dirs.add(parent)
        (self.dirs if is_dir else self.files).add(path)
        target = self.root.joinpath(*path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


def _write_member(reader: Source, target: Path, size: int, on_bytes: Callable[[int], None]) -> str:
    digest = hashlib.sha256()
    # O_EXCL and O_NOFOLLOW: never follow or reuse something already at the target.
    # 0o666: the umask decides, as for any file a user's tool writes.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "wb") as out:
        left = size
        while left > 0:
            chunk = reader.read(min(CHUNK, left))
            if not chunk:
                raise IntegrityError(f"archive ends inside {target.name!r}")
            digest.update(chunk)
            pagecache.write_file(out, chunk)
            left -= len(chunk)
            on_bytes(len(chunk))
    return digest.hexdigest()


def unpack_stream(
    source: Source, dest: Path, on_bytes: Callable[[int], None] = lambda n: None
) -> UnpackResult:
    """Extract the tar.zst read from `source` into the existing, empty directory `dest`.

    Raises IntegrityError (or its UnsafeArchive branch) on anything wrong; the caller owns
    `dest` and removes it then. The source is read to its end, so a caller hashing the
    compressed bytes sees all of them.
    """
    result = UnpackResult()
    tree = _Tree(dest)
    dctx = zstandard.ZstdDecompressor()
    try:
        reader = dctx.stream_reader(source, read_size=CHUNK, closefd=False)  # type: ignore[arg-type]
        with reader as plain, tarfile.open(fileobj=plain, mode="r|") as tar:
            sums: dict[str, str] | None = None
            last = False  # SHA256SUMS came after other members: nothing may follow it
            while (member := tar.next()) is not None:
                if last:
                    raise IntegrityError(
                        f"{SUMS_NAME} must be the archive's first or last member; "
                        "cannot verify its files"
                    )
                if member.name == SUMS_NAME and sums is None:
                    last = bool(tree.files or tree.dirs)
                    sums = _read_sums(tar, member, tree)
                    for path, actual in result.files.items():  # it came last: check now
                        _check(sums, path, actual)
                else:
                    _extract_member(tar, member, sums, tree, result, on_bytes)
            while plain.read(CHUNK):  # zero padding after the end-of-archive blocks
                pass
        trailing = 0
        while chunk := source.read(CHUNK):  # drained, so that a caller's digest sees it all
            trailing += len(chunk)
        if trailing:
            raise IntegrityError(f"{trailing} bytes follow the end of the zstd stream")
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as e:
        raise IntegrityError(f"the archive is not a valid tar.zst: {e}") from e
    if sums is None:
        raise IntegrityError(f"the archive has no {SUMS_NAME} member; cannot verify its files")
    missing = sorted(set(sums) - set(result.files))
    if missing:
        raise IntegrityError(
            f"{len(missing)} file(s) listed in {SUMS_NAME} are missing from the archive, "
            f"e.g. {missing[0]!r}"
        )
    return result


def _read_sums(tar: tarfile.TarFile, member: tarfile.TarInfo, tree: _Tree) -> dict[str, str]:
    if not member.isreg():
        raise UnsafeArchive(f"{SUMS_NAME} is not a regular file (tar type {member.type!r})")
    if member.size > MAX_SUMS_BYTES:
        raise UnsafeArchive(f"{SUMS_NAME} is {member.size} bytes, more than any real manifest")
    f = tar.extractfile(member)
    assert f is not None  # a regular member always has a reader
    text = f.read()
    sums = parse_sums(text)
    # Kept, as tar would: `sha256sum -c SHA256SUMS` works on the tree later.
    tree.claim(SUMS_NAME, is_dir=False).write_bytes(text)
    return sums


def _check(sums: dict[str, str], path: str, actual: str) -> None:
    if path not in sums:
        raise IntegrityError(f"member {path!r} is not listed in {SUMS_NAME}")
    if actual != sums[path]:
        raise IntegrityError(f"{path!r} has sha256 {actual}, but {SUMS_NAME} says {sums[path]}")


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    sums: dict[str, str] | None,  # None: SHA256SUMS comes last, the digests are checked then
    tree: _Tree,
    result: UnpackResult,
    on_bytes: Callable[[int], None],
) -> None:
    path = check_member_path(member.name)
    if member.isdir():
        tree.claim(path, is_dir=True).mkdir(exist_ok=True)
        return
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.issparse():
        raise UnsafeArchive(f"member {path!r} is not a regular file (tar type {member.type!r})")
    if sums is not None and path not in sums:
        raise IntegrityError(f"member {path!r} is not listed in {SUMS_NAME}")
    target = tree.claim(path, is_dir=False)
    reader = tar.extractfile(member)
    assert reader is not None
    actual = _write_member(reader, target, member.size, on_bytes)
    if sums is not None:
        _check(sums, path, actual)
    result.files[path] = actual
