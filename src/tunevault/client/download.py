"""The download engine: resumable, verified, optionally over several connections.

Bytes land in a preallocated `<name>.part` at their own offsets (spliced from the socket
in the kernel where possible, else read into buffers and written), and each
written span is logged in the sidecar (state.py), so a dropped connection, a killed
process or a rerun continues from the exact byte, with `If-Range` guarding against a
changed archive. A hasher thread follows the contiguous prefix of the .part, so the
sha256 is ready moments after the last byte; only a file whose size and digest match
what the server announced takes its final name, by an atomic rename.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from tunevault.client import splice
from tunevault.client.api import Client
from tunevault.client.fetch import Changed, Fetcher, RetryPolicy
from tunevault.client.hasher import Hasher
from tunevault.client.http import NETWORK_ERRORS, NetworkError, Response
from tunevault.client.state import PartFile, Target, find_resumable
from tunevault.client.target import (
    DownloadRequest,
    ProtocolError,
    disposition_filename,
    expected_sha256,
    full_size,
    strong_etag,
)
from tunevault.client.waiting import WaitNotice
from tunevault.errors import IntegrityError, RangeNotSatisfiable, TunevaultError

# One sidecar line per chunk: a killed process loses at most the chunk it was writing.
CHUNK = 1 << 20  # read into buffers: bigger buffers, fewer interpreter turns
SPLICED_CHUNK = 256 << 10  # spliced: Python does no per-byte work, so log more often
HASH_STEP = 4 << 20  # spliced bytes wake the hasher once per step, not once per splice
BUFFERS = 4  # at most, per connection
MIN_PIECE = 4 << 20
MAX_PIECE = 64 << 20


class Progress(Protocol):
    def start(self, total: int, done: int) -> None: ...
    def update(self, done: int) -> None: ...
    def finish(self) -> None: ...


@dataclass(frozen=True)
class DownloadResult:
    path: str
    filename: str
    size: int
    sha256: str
    verified: bool  # False when the server announced no digest (size was still checked)
    resumed_bytes: int  # already on disk from an earlier run
    transferred: int  # body bytes received over the network by this run
    seconds: float
    connections: int
    restarts: int
    files: int | None = None  # --extract: regular files written

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def download(
    client: Client,
    ft_id: str,
    *,
    step: int | None = None,
    checkpoint: str = "default",
    output: Path | str | None = None,
    connections: int = 1,
    progress: Progress | None = None,
    policy: RetryPolicy | None = None,
    notice: WaitNotice | None = None,
) -> DownloadResult:
    """Download a checkpoint archive to `output` (a file, or a directory to put it in)."""
    began = time.monotonic()
    policy = policy or RetryPolicy()
    request = DownloadRequest(ft_id, step, checkpoint)
    fetcher = Fetcher(client, request, policy, notice)
    # A str keeps a trailing "/", which says "a directory" even before it exists.
    into_dir = output is None or Path(output).is_dir() or str(output).endswith(os.sep)
    out = Path(output or Path.cwd()).absolute()
    (out if into_dir else out.parent).mkdir(parents=True, exist_ok=True)
    identity = request.identity(client.config.base_url)
    state = find_resumable(out, identity) if into_dir else _resumable_file(out, identity)
    restarts = 0
    while True:
        part, first, used = _open(fetcher, client, state, out, into_dir, identity, connections)
        state = None
        resumed = part.spans.total()  # kept from an earlier run, if it is still current
        try:
            digest = _fill(fetcher, part, first, used, progress)
            break
        except Changed as ch:
            part.discard()
            fetcher.reset()
            restarts += 1
            if restarts > policy.restarts:
                raise NetworkError(
                    f"the archive changed or the server ignored Range {restarts} times in a row"
                ) from None
            if ch.etag == part.target.etag:
                connections = 1  # same archive, Range ignored: one stream is all we get
        except IntegrityError:
            part.discard()
            raise
        except BaseException:
            part.close()  # a network failure or ^C keeps the .part for the next run
            raise
    return _finish(part, digest, resumed, fetcher, began, used, restarts)


def _finish(
    part: PartFile,
    digest: str,
    resumed: int,
    fetcher: Fetcher,
    began: float,
    connections: int,
    restarts: int,
) -> DownloadResult:
    # A digest means every byte was hashed, so none is missing; but another process can
    # still have resized the .part under us.
    size = os.fstat(part.fd).st_size
    target = part.target
    if size != target.size:
        part.discard()
        raise IntegrityError(f"{part.final.name}: got {size} bytes, expected {target.size}")
    if target.sha256 is not None and digest != target.sha256:
        part.discard()
        raise IntegrityError(
            f"{part.final.name}: sha256 {digest} does not match the server's {target.sha256}; "
            "the partial file was removed, run the command again"
        )
    part.commit()
    return DownloadResult(
        path=str(part.final),
        filename=part.final.name,
        size=target.size,
        sha256=digest,
        verified=target.sha256 is not None,
        resumed_bytes=resumed,
        transferred=fetcher.transferred,
        seconds=round(time.monotonic() - began, 3),
        connections=connections,
        restarts=restarts,
    )


def _resumable_file(final: Path, identity: str) -> PartFile | None:
    state = PartFile.load(final)
    if state is not None and state.target.identity != identity:
        state.discard()  # -o names the same file for another download: start over
        return None
    return state


def target_of(resp: Response, client: Client, request: DownloadRequest, identity: str) -> Target:
    """What a 200 or 206 announces; the name falls back to Together's naming scheme."""
    filename = disposition_filename(resp.header("Content-Disposition"))
    if filename is not None:
        request.check_answer(filename)  # never another kind or step than asked for
    else:
        try:
            output_name: str | None = client.get_fine_tune(request.ft_id).model_output_name
        except TunevaultError:
            output_name = None
        filename = request.fallback_name(output_name)
    return Target(
        identity=identity,
        filename=filename,
        etag=strong_etag(resp),
        size=full_size(resp),
        sha256=expected_sha256(resp),
    )


def _open(
    fetcher: Fetcher,
    client: Client,
    state: PartFile | None,
    out: Path,
    into_dir: bool,
    identity: str,
    connections: int,
) -> tuple[PartFile, Response, int]:
    """The .part to fill, a response whose body is its first missing piece, and how many
    connections to fill it with."""
    fresh: Response | None = None
    if state is not None and state.target.etag is not None:
        pieces = _pieces(state.missing(), connections)
        # Nothing missing: ask for the last byte anyway, to learn whether it is still current.
        start, end = pieces[0] if pieces else (state.target.size - 1, state.target.size)
        try:
            resp: Response | None = fetcher.get_range(state.target, start, end)
        except (RangeNotSatisfiable, ProtocolError):
            resp = None  # the archive shrank, or this 206 is of another one
        if resp is not None and resp.status == 206:
            return state, resp, connections
        state.discard()
        fresh = resp
    elif state is not None:
        state.discard()  # without a strong validator, old bytes cannot be trusted
    if fresh is None:
        fresh = fetcher.get({})
    if fresh.status != 200:
        fetcher.release(fresh)
        raise ProtocolError(f"expected 200 to a plain GET, got {fresh.status}")
    try:
        target = target_of(fresh, client, fetcher.request, identity)
        if target.etag is None:
            connections = 1  # pieces would be ranges that no If-Range guards against a change
        final = out / target.filename if into_dir else out
        return PartFile.create(final, target, reserve=connections > 1), fresh, connections
    except BaseException:
        fetcher.release(fresh)
        raise


def _pieces(gaps: list[tuple[int, int]], connections: int) -> deque[tuple[int, int]]:
    """Gaps cut into pieces, in file order so the hasher's prefix keeps growing."""
    if connections <= 1:
        return deque(gaps)
    missing = sum(b - a for a, b in gaps)
    size = min(max(missing // (connections * 16), MIN_PIECE), MAX_PIECE)
    return deque((p, min(p + size, b)) for a, b in gaps for p in range(a, b, size))


class _Buffers:
    """One connection's receive buffers. They cycle through the hasher, so receiving the
    next overlaps hashing the last; made on demand, as a spliced body needs none."""

    def __init__(self) -> None:
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self._made = 0

    def get(self) -> memoryview:
        # Only the owning thread takes: a queue it sees non-empty stays so until its get.
        if self._made < BUFFERS and self._free.empty():
            self._made += 1
            return memoryview(bytearray(CHUNK))
        return self._free.get()

    def put(self, view: memoryview) -> None:
        self._free.put(view)


class _Workers:
    def __init__(
        self,
        fetcher: Fetcher,
        part: PartFile,
        hasher: Hasher,
        pieces: deque[tuple[int, int]],
        connections: int,
    ) -> None:
        self.fetcher = fetcher
        self.part = part
        self.hasher = hasher
        self.pieces = pieces
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.writing = splice.Writing.for_connections(connections)

    def take(self) -> tuple[int, int] | None:
        with self.lock:
            return self.pieces.popleft() if self.pieces else None

    def give_back(self, piece: tuple[int, int]) -> None:
        with self.lock:
            self.pieces.appendleft(piece)

    def run(self, first: Response | None) -> None:
        try:
            self._run(first)
        except BaseException as e:
            with self.lock:
                self.error = self.error or e
            self.fetcher.abort()

    def _run(self, resp: Response | None) -> None:
        fetcher = self.fetcher
        buffers = _Buffers()
        while not fetcher.cancel.is_set() and (piece := self.take()) is not None:
            start, end = piece
            pos = start
            try:
                if resp is None:
                    resp = self._request(start, end)
                while pos < end:
                    if fetcher.cancel.is_set():
                        return
                    n, err = self._receive(resp, pos, end - pos, buffers)
                    if n:
                        pos += n
                        fetcher.progressed(n)
                    if err is not None:
                        raise NetworkError(f"read failed at byte {pos}: {err}") from err
                    if n == 0:
                        raise NetworkError(f"connection closed at byte {pos} of {end}")
            except NETWORK_ERRORS as e:
                self._retry(pos, end, NetworkError(f"read failed at byte {pos}: {e}"))
            except NetworkError as e:
                self._retry(pos, end, e)
            finally:
                fetcher.release(resp)
                resp = None
                self.hasher.nudge()

    def _receive(
        self, resp: Response, pos: int, limit: int, buffers: _Buffers
    ) -> tuple[int, BaseException | None]:
        """Up to `limit` body bytes written to the .part at `pos` and recorded, and any
        failure of the connection. A failed write raises: the disk's fault, not retried."""
        part = self.part
        if resp.can_splice():
            try:
                n, err = resp.splice_into(part.fd, pos, min(SPLICED_CHUNK, limit), self.writing)
            except splice.WriteFailed as e:
                raise part.write_failed(e.error) from e.error
            if n:
                part.record(pos, pos + n)
                if (pos + n) // HASH_STEP != pos // HASH_STEP:
                    self.hasher.nudge()  # spliced bytes are read back from the file
            return n, err
        view = buffers.get()
        try:
            n, err = resp.readinto(view[: min(CHUNK, limit)])
            if n:
                with self.writing.turn:
                    part.pwrite(pos, view[:n], self.writing.step)
        except BaseException:
            buffers.put(view)  # a lost buffer would leave a later get() waiting forever
            raise
        if not n:
            buffers.put(view)
            return n, err
        self.hasher.submit(pos, view[:n], partial(buffers.put, view))  # wakes the hasher
        part.record(pos, pos + n)
        return n, err

    def _retry(self, pos: int, end: int, err: NetworkError) -> None:
        if pos < end:
            self.give_back((pos, end))
        if not self.fetcher.cancel.is_set():
            self.fetcher.failed(err)

    def _request(self, start: int, end: int) -> Response:
        resp = self.fetcher.get_range(self.part.target, start, end)
        if resp.status == 200:
            self.fetcher.release(resp)
            raise Changed(strong_etag(resp))
        return resp


def _fill(
    fetcher: Fetcher,
    part: PartFile,
    first: Response,
    connections: int,
    progress: Progress | None,
) -> str:
    """Fetch every missing byte; returns the sha256 of the whole file."""
    gaps = part.missing()
    if not gaps:
        fetcher.release(first)
    pieces = _pieces(gaps, connections)
    hasher = Hasher(part)
    count = max(1, min(connections, len(pieces)))
    workers = _Workers(fetcher, part, hasher, pieces, count)
    hasher.start()
    threads = [
        threading.Thread(
            target=workers.run,
            args=(first if i == 0 and gaps else None,),
            name=f"tunevault-get-{i}",
            daemon=True,
        )
        for i in range(count)
    ]
    if progress:
        progress.start(part.target.size, part.spans.total())
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.1)
                if progress:
                    progress.update(part.spans.total())
    finally:
        if workers.error is not None or any(t.is_alive() for t in threads):
            # Stop everything, and wait: a straggler must not write into a closed fd.
            fetcher.abort()
            hasher.stop.set()
            for t in [*threads, hasher]:
                t.join()
    if workers.error is not None:
        raise workers.error
    hasher.nudge()
    hasher.join()
    if progress:
        progress.update(part.spans.total())
        progress.finish()
    if hasher.error is not None:
        raise hasher.error
    if hasher.digest is None:
        raise IntegrityError(f"{part.part} is missing bytes after the download")
    return hasher.digest
