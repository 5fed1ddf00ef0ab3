"""Walk a model directory into manifest entries, refusing anything that is not plainly a file.

Symlinks are the one subtle case: one that resolves to a regular file inside the
directory is published as a copy of that file (and reported), anything else (a link
leaving the directory, to a directory, dangling) is refused, as are devices, FIFOs and
sockets. Nothing is followed without the caller hearing about it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunevault.archive.write import SUMS_NAME
from tunevault.errors import InvalidRequest

CHUNK = 1 << 20
MAX_PATH_BYTES = 1000
# State a Trainer keeps to resume training; not needed to load the weights. training_args.bin
# is a pickle (loading it runs code), so it stays home with the optimizer state by default.
RESUME_STATE = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "training_args.bin")
RESUME_STATE_PREFIXES = ("rng_state",)  # rng_state.pth, rng_state_<rank>.pth
RESUME_STATE_DIRS = ("global_step",)  # DeepSpeed's per-step optimizer shards


class LayoutError(InvalidRequest, ValueError):
    """The directory cannot be published as it is; the message says why and what to do."""

    code = "invalid_layout"
    client_side = True


@dataclass(frozen=True)
class LocalFile:
    path: str  # manifest path: relative, '/'-separated
    source: Path  # where the bytes are read (a symlink's resolved target)
    size: int
    mtime_ns: int


def is_resume_state(name: str, is_dir: bool) -> bool:
    if is_dir:
        return name.startswith(RESUME_STATE_DIRS)
    return name in RESUME_STATE or name.startswith(RESUME_STATE_PREFIXES)


def _check_path(rel: str) -> None:
    if len(rel.encode()) > MAX_PATH_BYTES:
        raise LayoutError(f"{rel[:80]}...: path longer than {MAX_PATH_BYTES} bytes")
    if "\\" in rel or any(ord(c) < 32 or ord(c) == 127 for c in rel):
        raise LayoutError(f"{rel!r}: backslashes and control characters cannot be published")
    if rel == SUMS_NAME:
        raise LayoutError(
            f"a file named {SUMS_NAME} at the top is reserved for the archive's index"
        )


def collect(
    root: Path,
    *,
    include_resume_state: bool = False,
    skip: Callable[[str], bool] = lambda _rel: False,
    notes: list[str] | None = None,
) -> list[LocalFile]:
    """Regular files under `root` sorted by path; hidden entries (`.name`) are left out.

    `skip(rel)` drops top-level entries (the Trainer layout's `checkpoint-N/`). Symlinks
    published as copies are described in `notes`.
    """
    base = root.resolve()
    out: list[LocalFile] = []
    _walk(base, base, "", include_resume_state, skip, notes, out)
    return sorted(out, key=lambda f: f.path)


def _walk(
    base: Path,
    here: Path,
    prefix: str,
    include_resume_state: bool,
    skip: Callable[[str], bool],
    notes: list[str] | None,
    out: list[LocalFile],
) -> None:
    with os.scandir(here) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = prefix + entry.name
        if entry.name.startswith(".") or (not prefix and skip(rel)):
            continue
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if not (stat.S_ISLNK(mode) or stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise LayoutError(f"{rel}: {_describe(mode)}; only regular files can be published")
        if not include_resume_state and is_resume_state(entry.name, stat.S_ISDIR(mode)):
            continue
        if stat.S_ISLNK(mode):
            _check_path(rel)
            out.append(_link(base, Path(entry.path), rel, notes))
        elif stat.S_ISDIR(mode):
            _walk(base, Path(entry.path), rel + "/", include_resume_state, skip, notes, out)
        else:
            _check_path(rel)
            out.append(LocalFile(rel, Path(entry.path), st.st_size, st.st_mtime_ns))


def _link(base: Path, link: Path, rel: str, notes: list[str] | None) -> LocalFile:
    target = link.resolve()
    if not target.is_relative_to(base):
        raise LayoutError(
            f"{rel}: symlink to {target}, outside {base}; copy the file in or remove the link"
        )
    try:
        st = target.stat()
    except OSError as e:
        raise LayoutError(f"{rel}: broken symlink ({e.strerror})") from e
    if not stat.S_ISREG(st.st_mode):
        raise LayoutError(f"{rel}: symlink to a {_describe(st.st_mode)}; only files can be linked")
    if notes is not None:
        notes.append(f"{rel}: symlink, published as a copy of {target.relative_to(base)}")
    return LocalFile(rel, target, st.st_size, st.st_mtime_ns)


def _describe(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """Streaming digest: a file of any size costs one chunk of memory."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return h.hexdigest()
