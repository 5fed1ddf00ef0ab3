"""Some files of a checkpoint instead of its archive, over the Hub file routes (docs/hub.md).

The revision is resolved once to its commit and every file is fetched at that commit, so
a checkpoint that changes midway cannot mix. Each file lands in `<name>.part` beside its
destination, resumes from there with `Range` and `If-Range`, and takes its name only once
its sha256 matches the manifest's. A file already in place with that digest is skipped.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from tunevault.client.api import Client
from tunevault.client.fetch import RetryPolicy, retryable
from tunevault.client.http import NetworkError, Response
from tunevault.client.target import ProtocolError
from tunevault.errors import (
    IntegrityError,
    InvalidRequest,
    NotFound,
    TunevaultError,
)
from tunevault.models import FileEntry
from tunevault.storage import pagecache

CHUNK = 1 << 20


@dataclass(frozen=True)
class FilesResult:
    directory: str
    revision: str
    commit: str
    files: list[dict[str, Any]]  # path, size, sha256, transferred (0: already in place)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def revision_of(step: int | None, checkpoint: str) -> str:
    """The Hub revision of the archive download's own choice of checkpoint."""
    if step is not None:
        return f"step-{step}"
    if checkpoint == "default":
        return "main"
    return "model_output_path" if checkpoint == "modelOutputPath" else checkpoint


def list_files(client: Client, ft_id: str, revision: str) -> tuple[str, list[FileEntry]]:
    """The commit the revision names now, and its files."""
    path = f"/api/models/{quote(ft_id, safe='')}/revision/{quote(revision, safe='')}"
    info = client.transport.json("GET", path)
    try:
        files = [
            FileEntry(s["rfilename"], int(s["size"]), s["lfs"]["sha256"]) for s in info["siblings"]
        ]
        return str(info["sha"]), files
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"the server's model info lacks {e}: is it a tunevault?") from e


def select(
    files: Sequence[FileEntry],
    paths: Sequence[str],
    include: Sequence[str],
    exclude: Sequence[str],
) -> list[FileEntry]:
    """The named files and those matching an include glob (all, without either), minus
    those matching an exclude glob. A named file that does not exist is an error."""
    by_path = {f.path: f for f in files}
    missing = [p for p in paths if p not in by_path]
    if missing:
        listed = ", ".join(sorted(by_path)[:20])
        raise NotFound(f"no file {missing[0]!r} in this checkpoint; it holds: {listed}")
    wanted = set(paths)
    if include or not paths:
        pats = include or ["*"]
        wanted |= {f.path for f in files if any(fnmatch.fnmatchcase(f.path, p) for p in pats)}
    chosen = [by_path[p] for p in sorted(wanted)]
    chosen = [f for f in chosen if not any(fnmatch.fnmatchcase(f.path, p) for p in exclude)]
    if not chosen:
        raise InvalidRequest("no file of the checkpoint matches --file/--include/--exclude")
    return chosen


def download_files(
    client: Client,
    ft_id: str,
    revision: str,
    output: Path,
    *,
    paths: Sequence[str] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    policy: RetryPolicy | None = None,
    say: Callable[[str], None] = lambda _line: None,
) -> FilesResult:
    commit, files = list_files(client, ft_id, revision)
    chosen = select(files, paths, include, exclude)
    total = sum(f.size for f in chosen)
    say(f"{ft_id} at {revision} (commit {commit[:12]}): {len(chosen)} files, {total} bytes")
    done = []
    for f in chosen:
        sent = fetch_file(client, ft_id, commit, f, output, policy or RetryPolicy())
        done.append({**asdict(f), "transferred": sent})
        say(f"{'kept' if sent == 0 else 'got'} {f.path} ({f.size} bytes, sha256 {f.sha256})")
    return FilesResult(str(output), revision, commit, done)


def _destination(output: Path, path: str) -> Path:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ProtocolError(f"the server listed an unsafe path: {path[:200]!r}")
    return output.joinpath(*rel.parts)


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch_file(
    client: Client, ft_id: str, commit: str, f: FileEntry, output: Path, policy: RetryPolicy
) -> int:
    """Bring `f` to its place under `output`; returns how many of its bytes were not
    already there (0: the file was in place, or only its digest was left to check)."""
    dest = _destination(output, f.path)
    if dest.is_file() and dest.stat().st_size == f.size and _sha256_of(dest) == f.sha256:
        return 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    url = client.transport.url(f"/{quote(ft_id, safe='')}/resolve/{commit}/{quote(f.path)}")
    start = _size(part)
    if start > f.size:  # not a prefix of this file
        part.unlink()
        start = 0
    have, streak = start, 0
    while have < f.size or not part.exists():
        try:
            _transfer(client, url, f, part, have)
        except TunevaultError as e:
            if not retryable(e):
                raise
            streak = 0 if _size(part) > have else streak + 1
            if streak > policy.attempts:
                raise
            time.sleep(min(policy.backoff * 2 ** max(streak - 1, 0), policy.max_backoff))
        have = _size(part)
    if _sha256_of(part) != f.sha256:
        part.unlink()
        raise IntegrityError(f"{f.path}: the bytes do not match sha256 {f.sha256}; run again")
    part.replace(dest)
    return f.size - start


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _transfer(client: Client, url: str, f: FileEntry, part: Path, have: int) -> None:
    """One request for the missing bytes, appended to the .part as they arrive."""
    headers = {"Range": f"bytes={have}-", "If-Range": f'"{f.sha256}"'} if have else {}
    resp = client.transport.open("GET", url, headers)
    try:
        resp.raise_for_error()
        if resp.status not in (200, 206):
            raise ProtocolError(f"unexpected HTTP {resp.status} for {f.path}")
        mode = "ab" if resp.status == 206 else "wb"  # 200: the whole file again
        _append(resp, part, mode)
    finally:
        resp.close()


def _append(resp: Response, part: Path, mode: str) -> None:
    got = 0
    buf = memoryview(bytearray(CHUNK))
    with part.open(mode, buffering=0) as out:
        while True:
            n, err = resp.readinto(buf)
            pagecache.write_all(out.fileno(), buf[:n])
            got += n
            if err is not None:
                raise NetworkError(f"the connection broke after {got} bytes: {err}")
            if not n:
                if resp.raw.length:  # the server closed before its Content-Length
                    raise NetworkError(f"the connection closed after {got} bytes")
                return
