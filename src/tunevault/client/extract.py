"""`--extract`: decompress and unpack while downloading; the archive never lands on disk.

The network body is one byte stream fed to archive/read.py. When a connection drops, the stream
reconnects with `Range` from the exact byte and `If-Range`, so the decompressor never
notices. A server that ignores Range but still has the same archive is skipped forward;
a changed archive starts everything over in a fresh temporary directory. Files appear
in a temporary directory next to the destination, which is renamed into place only
after every file matched SHA256SUMS and the whole archive matched its digest.
"""

from __future__ import annotations

import glob
import hashlib
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tunevault.archive.read import unpack_stream
from tunevault.client.api import Client
from tunevault.client.download import DownloadResult, Progress, target_of
from tunevault.client.fetch import Changed, Fetcher, RetryPolicy
from tunevault.client.http import NETWORK_ERRORS, NetworkError, Response
from tunevault.client.state import Target
from tunevault.client.target import DownloadRequest, strong_etag
from tunevault.client.waiting import WaitNotice
from tunevault.errors import IntegrityError, InvalidRequest

CHUNK = 1 << 20
SKIP_CHUNK = 1 << 20


class _Stream:
    """A `read(n)` view of the archive body that survives dropped connections."""

    def __init__(self, fetcher: Fetcher, target: Target, first: Response) -> None:
        self.fetcher = fetcher
        self.target = target
        self.resp: Response | None = first
        self.pos = 0
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = CHUNK if n < 0 else n
        while self.pos < self.target.size:
            if self.resp is None:
                self.resp = self._reopen()
            try:
                data = self.resp.read(min(n, self.target.size - self.pos))
            except NETWORK_ERRORS as e:
                data, err = b"", NetworkError(f"read failed at byte {self.pos}: {e}")
            else:
                err = NetworkError(f"connection closed at byte {self.pos}")
            if not data:
                self.close()
                self.fetcher.failed(err)
                continue
            self.hash.update(data)
            self.pos += len(data)
            self.fetcher.progressed(len(data))
            return data
        return b""

    def _reopen(self) -> Response:
        etag = self.target.etag
        if etag is None:
            raise Changed(None)  # no validator: bytes from two versions could mix
        resp = self.fetcher.get_range(self.target, self.pos)
        if resp.status == 206:
            return resp
        if strong_etag(resp) != etag:
            self.fetcher.release(resp)
            raise Changed(strong_etag(resp))
        self._skip(resp)  # Range ignored, same archive: drop what we already have
        return resp

    def _skip(self, resp: Response) -> None:
        left = self.pos
        while left > 0:
            data = resp.read(min(SKIP_CHUNK, left))
            if not data:
                self.fetcher.release(resp)
                raise NetworkError("connection closed while skipping to the resume point")
            left -= len(data)

    def close(self) -> None:
        self.fetcher.release(self.resp)
        self.resp = None


def _reporter(progress: Progress | None, stream: _Stream) -> Callable[[int], None]:
    def report(_n: int) -> None:
        if progress:
            progress.update(stream.pos)

    return report


def check_destination(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidRequest(f"--extract destination {dest} exists and is not an empty directory")


def _prepare(dest: Path) -> Path:
    check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.part"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run into the same DIR
    return dest


def _open(fetcher: Fetcher, client: Client) -> _Stream:
    """The archive's body from its first byte, checked to be what was asked for."""
    first = fetcher.get({})
    identity = fetcher.request.identity(client.config.base_url)
    try:
        target = target_of(first, client, fetcher.request, identity)
    except BaseException:
        fetcher.release(first)
        raise
    return _Stream(fetcher, target, first)


def _temp_dir(dest: Path) -> Path:
    """A fresh `.<name>.<random>.part` beside `dest`, with the mode the umask gives: it
    becomes `dest`, which an inference server running as another user must be able to
    read (mkdtemp would make it 0700)."""
    while True:
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.part"
        try:
            tmp.mkdir()
        except FileExistsError:
            continue  # 48 random bits taken: draw again
        return tmp


def download_extract(
    client: Client,
    ft_id: str,
    dest: Path,
    *,
    step: int | None = None,
    checkpoint: str = "default",
    progress: Progress | None = None,
    policy: RetryPolicy | None = None,
    notice: WaitNotice | None = None,
) -> DownloadResult:
    """Stream the archive into `dest` (absent or empty), verifying every file."""
    began = time.monotonic()
    policy = policy or RetryPolicy()
    dest = _prepare(dest.absolute())
    request = DownloadRequest(ft_id, step, checkpoint)
    fetcher = Fetcher(client, request, policy, notice)
    for restarts in range(policy.restarts + 1):
        stream = _open(fetcher, client)
        target = stream.target
        tmp = _temp_dir(dest)
        try:
            if progress:
                progress.start(target.size, 0)
            unpacked = unpack_stream(stream, tmp, _reporter(progress, stream))
            digest = stream.hash.hexdigest()
            if stream.pos != target.size:
                raise IntegrityError(f"archive ended at byte {stream.pos} of {target.size}")
            if target.sha256 is not None and digest != target.sha256:
                raise IntegrityError(
                    f"archive sha256 {digest} does not match the server's {target.sha256}"
                )
            check_destination(dest)
            tmp.replace(dest)  # an empty directory is replaced atomically too
        except Changed:
            shutil.rmtree(tmp, ignore_errors=True)
            fetcher.reset()
            continue
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            stream.close()
        if progress:
            progress.update(stream.pos)
            progress.finish()
        return DownloadResult(
            path=str(dest),
            filename=target.filename,
            size=target.size,
            sha256=digest,
            verified=target.sha256 is not None,
            resumed_bytes=0,
            transferred=fetcher.transferred,
            seconds=round(time.monotonic() - began, 3),
            connections=1,
            restarts=restarts,
            files=len(unpacked.files),
        )
    raise NetworkError(f"the archive changed {policy.restarts + 1} times during the download")
