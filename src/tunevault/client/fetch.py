"""Requests of one download, with the retry policy every connection shares.

Transient failures (a dropped or refused connection, 5xx, 429) are retried with
exponential backoff; `archive_not_ready` is waited out for a bounded time. The failure
count resets whenever bytes arrive, so a flaky link that keeps moving keeps going, while
a hard total bounds every loop.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from tunevault.client.api import Client
from tunevault.client.http import NetworkError, Response
from tunevault.client.retry import (
    Backoff,
    announce_lost,
    announce_status,
    announce_unreachable,
)
from tunevault.client.state import Target
from tunevault.client.target import DownloadRequest, ProtocolError, content_range
from tunevault.client.waiting import WaitNotice, not_ready_after, poll_pause
from tunevault.errors import ArchiveNotReady, RateLimited, StorageUnavailable, TunevaultError

# RFC 7240: answer an archive being (re)built with 409 + Retry-After at once, rather than
# holding the request: this client waits itself, visibly (client/waiting.py).
RESPOND_ASYNC = {"Prefer": "respond-async"}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8  # consecutive failures without a byte of progress
    total_failures: int = 200  # over the whole download, whatever the progress
    backoff: float = 0.2  # first pause; doubled per consecutive failure
    max_backoff: float = 8.0
    not_ready_timeout: float = 600.0  # how long to wait for an archive being built
    restarts: int = 3  # how often the archive may change (or Range be ignored) under us


class Changed(Exception):
    """A ranged request got the whole body: the archive changed or Range was ignored."""

    def __init__(self, etag: str | None) -> None:
        super().__init__("the server sent a full body for a ranged request")
        self.etag = etag  # of the full body: the same as ours means Range was ignored


def retryable(e: TunevaultError) -> bool:
    return (
        isinstance(e, NetworkError | StorageUnavailable | RateLimited) or type(e) is TunevaultError
    )


class Fetcher:
    def __init__(
        self,
        client: Client,
        request: DownloadRequest,
        policy: RetryPolicy,
        notice: WaitNotice | None = None,
    ) -> None:
        self.transport = client.transport
        self.notice = notice
        self.request = request
        self.url = client.transport.url("/v1/finetune/download", request.params())
        self.policy = policy
        self.cancel = threading.Event()
        self.transferred = 0  # body bytes received in this run
        self._lock = threading.Lock()
        self._streak = 0
        self._failures = 0
        self._live: set[Response] = set()

    def get(self, headers: dict[str, str], method: str = "GET") -> Response:
        """A 200 or 206 answer; other statuses raise the server's error class. A HEAD asks
        whether the archive is built, and its size, without downloading it."""
        since: list[float] = []  # when a wait for a build began, once one did
        ready = False
        try:
            resp = self._get(headers, since, method)
            ready = True
            return resp
        finally:
            if since and self.notice is not None:
                self.notice.done(time.monotonic() - since[0], ready=ready)

    def _get(self, headers: dict[str, str], since: list[float], method: str) -> Response:
        while True:
            if self.cancel.is_set():
                raise NetworkError("download cancelled")
            try:
                resp = self.transport.open(method, self.url, {**headers, **RESPOND_ASYNC})
                if resp.status in (200, 206):
                    with self._lock:
                        self._live.add(resp)
                    return resp
                resp.raise_for_error()
                resp.close()
                raise ProtocolError(f"unexpected HTTP {resp.status} from the download route")
            except ArchiveNotReady as e:
                since[:] = since or [time.monotonic()]
                self._wait_out(e, since[0])
            except TunevaultError as e:
                if not retryable(e):
                    raise
                self.failed(e)

    def _wait_out(self, e: ArchiveNotReady, since: float) -> None:
        """Sleep until the next look at an archive being built, or raise when --wait is up."""
        limit = self.policy.not_ready_timeout
        waited = time.monotonic() - since
        if waited >= limit:
            raise not_ready_after(e, limit) from e
        pause = min(poll_pause(e), limit - waited)
        if self.notice is not None:
            self.notice.waiting(e.message, pause, waited, limit)
        self.cancel.wait(pause)

    def get_range(self, target: Target, start: int, end: int | None = None) -> Response:
        """Bytes `start` to `end` (exclusive; None: to the end) of `target`, guarded by
        If-Range when it has an ETag.

        Returns a 206 of exactly those bytes, or a 200 with the whole of what the server
        has now (the archive changed, or Range was ignored) for the caller to judge. A 206
        of other bytes, or of an archive of another size or ETag, raises ProtocolError.
        """
        last = "" if end is None else str(end - 1)
        headers = {"Range": f"bytes={start}-{last}"}
        if target.etag is not None:
            headers["If-Range"] = target.etag
        resp = self.get(headers)
        if resp.status == 200:
            return resp
        try:
            begin, stop, total = content_range(resp)
            if begin != start or (end is not None and stop > end) or total != target.size:
                raise ProtocolError(
                    f"asked for bytes {start}-{last}/{target.size}, got {begin}-{stop - 1}/{total}"
                )
            etag = resp.header("ETag")
            if target.etag is not None and etag not in (None, target.etag):
                raise ProtocolError(f"If-Range {target.etag} was ignored: got bytes of {etag}")
        except ProtocolError:
            self.release(resp)
            raise
        return resp

    def release(self, resp: Response | None) -> None:
        if resp is None:
            return
        with self._lock:
            self._live.discard(resp)
        resp.close()

    def failed(self, err: TunevaultError) -> None:
        """Count a transient failure and back off, or raise when the budget is spent."""
        with self._lock:
            self._streak += 1
            self._failures += 1
            streak, total = self._streak, self._failures
        if streak > self.policy.attempts or total > self.policy.total_failures:
            raise err
        backoff = Backoff(self.policy.attempts, self.policy.backoff, self.policy.max_backoff)
        pause = backoff.pause(streak, err.headers.get("Retry-After"))
        if isinstance(err, NetworkError) and err.message.startswith("cannot reach"):
            announce_unreachable(self.url, err, pause, streak, self.policy.attempts)
        elif isinstance(err, NetworkError):
            announce_lost(self.url, err, pause, streak, self.policy.attempts)
        else:
            announce_status(self.url, err.status, pause, streak, self.policy.attempts)
        if self.cancel.wait(pause):
            raise err

    def progressed(self, n: int) -> None:
        with self._lock:
            self.transferred += n
            self._streak = 0

    def reset(self) -> None:
        """Ready for a fresh start, once every thread of the aborted one has stopped."""
        self.cancel = threading.Event()
        with self._lock:
            self._streak = 0

    def abort(self) -> None:
        """Stop every connection now: blocked reads wake up with an error."""
        self.cancel.set()
        with self._lock:
            live = list(self._live)
        for resp in live:
            resp.shutdown()
