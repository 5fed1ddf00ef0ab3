"""HTTP/1.1 over the standard library: one connection per request, manual redirects.

Redirects are followed by hand so that the API key never leaves its origin (a presigned
object-store URL gets no Authorization) while Range and If-Range go along to every hop.
Server errors come back as the exception class named by the envelope's `code`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from tunevault.client import splice
from tunevault.client.config import ClientConfig
from tunevault.client.retry import (
    RETRY_STATUSES,
    Backoff,
    announce_lost,
    announce_status,
    announce_unreachable,
    reason,
    where,
)
from tunevault.errors import ArchiveNotReady, TunevaultError
from tunevault.storage import pagecache

USER_AGENT = "tunevault-client/0.1"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_ERROR_BODY = 1 << 20
# Headers an error keeps: a wait's (client/waiting.py reads them) besides Retry-After.
PASSED_ON = (
    "Retry-After",
    "Tunevault-Build-State",
    "Tunevault-Build-Eta",
    "Tunevault-Queue-Ahead",
    "Tunevault-Build-Progress",
)
MAX_JSON_BODY = 64 << 20
IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE"})
REFUSED = frozenset({429, 503})  # the server did nothing: safe to send again whatever it was
# Raised by the socket layer or http.client when a peer vanishes mid-exchange.
NETWORK_ERRORS = (OSError, http.client.HTTPException)


class NetworkError(TunevaultError):
    """The server could not be reached, or the connection broke and retries ran out."""

    client_side = True
    status = 503
    error_type = "network_error"
    code = "network_error"


class Unreachable(NetworkError):
    """No answer came back at all (as opposed to an answer cut short)."""


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


@dataclass(eq=False)  # hashed by identity: the fetcher tracks live responses in a set
class Response:
    status: int
    raw: http.client.HTTPResponse
    conn: http.client.HTTPConnection
    # http.client drops `conn.sock` when the server says `Connection: close`; the socket
    # lives on in the response's stream, and this keeps a handle on it.
    sock: socket.socket | None = None
    hops: list[dict[str, str]] = field(default_factory=list)  # headers of redirects followed
    _pipe: splice.Pipe | None = field(default=None, init=False)
    _drained: bool = field(default=False, init=False)  # http.client's read-ahead is used up
    _body: bytes | None = field(default=None, init=False)  # the whole body, once `buffer`ed

    def header(self, name: str) -> str | None:
        return self.raw.getheader(name)

    def headers(self) -> dict[str, str]:
        return dict(self.raw.getheaders())

    def readinto(self, buf: memoryview) -> tuple[int, BaseException | None]:
        """Fill `buf` as far as the body goes. A failure midway still returns the bytes
        that arrived before it, so that they are kept and not fetched again."""
        raw, got, err = self.raw, 0, None
        if raw.chunked or raw.fp is None:
            try:
                return raw.readinto(buf), None
            except NETWORK_ERRORS as e:
                return 0, e
        want = len(buf) if raw.length is None else min(len(buf), raw.length)
        try:
            while got < want:
                n = raw.fp.readinto1(buf[got:want])
                if not n:
                    break
                got += n
        except NETWORK_ERRORS as e:
            err = e
        if raw.length is not None:
            raw.length -= got  # http.client's own count of what is left
        return got, err

    def shutdown(self) -> None:
        """Wake any thread blocked reading this response: its read fails at once."""
        if self.sock is not None:
            with contextlib.suppress(OSError):  # already closed
                self.sock.shutdown(socket.SHUT_RDWR)

    def can_splice(self) -> bool:
        """Whether the body can go socket-to-file in the kernel: plain TCP, known length."""
        raw = self.raw
        return (
            splice.SUPPORTED
            and type(self.sock) is socket.socket  # not TLS: its bytes are sealed
            and self.sock.fileno() >= 0
            and not raw.chunked
            and raw.length is not None
            and raw.fp is not None
        )

    def splice_into(
        self, fd: int, offset: int, limit: int, writing: splice.Writing
    ) -> tuple[int, BaseException | None]:
        """Like `readinto` followed by a pwrite at `offset`, without the bytes passing
        through Python; only when `can_splice()`. Returns what landed and any failure of
        the socket; a failed write to `fd` raises splice.WriteFailed."""
        raw, sock = self.raw, self.sock
        assert raw.length is not None and raw.fp is not None and sock is not None
        want, got, err = min(limit, raw.length), 0, None
        try:
            if not self._drained:
                # Body bytes http.client read ahead with the headers go first, by hand.
                # peek() returns the whole read-ahead buffer, so after read1 it is empty
                # and the socket holds the rest of the body in order.
                ahead = raw.fp.peek()
                head = ahead[:want]
                raw.fp.read1(len(head))
                self._drained = len(head) == len(ahead)
                try:
                    with writing.turn:
                        pagecache.pwrite_all(fd, memoryview(head), offset, writing.step)
                except OSError as e:
                    raise splice.WriteFailed(e) from e
                got = len(head)
                if not head:
                    want = 0  # end of stream
            if self._drained:
                if self._pipe is None:
                    self._pipe = splice.Pipe()
                while got < want:
                    n = self._pipe.move(
                        sock.fileno(), sock.gettimeout(), fd, offset + got, want - got, writing
                    )
                    if not n:
                        break
                    got += n
        except NETWORK_ERRORS as e:
            err = e
        raw.length -= got
        return got, err

    def read(self, n: int = -1) -> bytes:
        if self._body is not None:
            return self._body if n < 0 else self._body[:n]
        return self.raw.read(n) if n >= 0 else self.raw.read()

    def buffer(self, limit: int) -> None:
        """Read the whole body now, so that an answer cut short is a NetworkError (and can
        be retried) rather than a truncated body; bodies over `limit` are refused."""
        if self.raw.length is not None and self.raw.length > limit:
            self.close()
            raise TunevaultError(f"the answer is {self.raw.length} bytes, over {limit}")
        try:
            body = self.raw.read(limit)
        except NETWORK_ERRORS as e:
            self.close()
            raise NetworkError(f"the answer was cut: {_describe(e)}") from e
        if self.raw.length:  # announced by Content-Length but never sent
            self.close()
            raise NetworkError(f"the answer was cut after {len(body)} bytes")
        self._body = body

    def close(self) -> None:
        self.raw.close()
        self.conn.close()
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None

    def raise_for_error(self) -> None:
        """Turn a 4xx/5xx into the server's exception class, with its useful headers."""
        if self.status < 400:
            return
        try:
            body: Any = json.loads(self.read(MAX_ERROR_BODY) or b"null")
        except (ValueError, *NETWORK_ERRORS):
            body = None
        finally:
            self.close()
        err = TunevaultError.from_envelope(self.status, body)
        state = self.header("Tunevault-Build-State")
        if body is None and self.status == 409 and state is not None:
            # A HEAD's 409 has no body: the build headers say what the envelope would.
            eta, ahead = self.header("Tunevault-Build-Eta"), self.header("Tunevault-Queue-Ahead")
            queue = f", {ahead} ahead" if state == "queued" and ahead else ""
            err = ArchiveNotReady(f"the archive is being built ({state}{queue}, about {eta} s)")
        for name in (*PASSED_ON, "Content-Range", "Upload-Offset"):
            if (value := self.header(name)) is not None:
                err.headers[name] = value
        raise err


class Transport:
    def __init__(
        self,
        config: ClientConfig,
        timeout: float = 60.0,
        backoff: Backoff | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.config = config
        self.user_agent = user_agent
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self._origin = origin(config.base_url)

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.config.base_url}{path}{query}"

    def open(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        """Send one request, following redirects; network failures raise NetworkError."""
        extra = dict(headers or {})
        hops: list[dict[str, str]] = []
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._send(method, url, extra, body)
            location = resp.header("Location")
            if resp.status not in REDIRECTS or not location:
                resp.hops = hops
                return resp
            hops.append(resp.headers())
            resp.close()
            url = urljoin(url, location)
            if resp.status == 303:
                method, body = "GET", None
        raise NetworkError(f"more than {MAX_REDIRECTS} redirects from {url[:200]}")

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | Iterable[bytes] | None = None,
    ) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NetworkError(f"cannot follow a redirect to {url[:200]!r}")
        conn_cls = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_cls(parts.hostname, parts.port, timeout=self.timeout)
        sent = {"User-Agent": self.user_agent, "Accept-Encoding": "identity", **headers}
        # The key goes to the configured origin only: never to a redirect target elsewhere.
        if self.config.api_key and origin(url) == self._origin:
            sent["Authorization"] = f"Bearer {self.config.api_key}"
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        try:
            conn.request(method, target, body=body, headers=sent)
            sock = conn.sock
            raw = conn.getresponse()
        except NETWORK_ERRORS as e:
            conn.close()
            raise Unreachable(
                f"cannot reach {where(url)} ({method} {parts.path}): {reason(e)}; "
                "check the URL and that the server runs, then run the command again"
            ) from e
        return Response(status=raw.status, raw=raw, conn=conn, sock=sock)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        content: Callable[[], Iterable[bytes]] | None = None,
        idempotent: bool | None = None,
        buffered: bool = False,
    ) -> Response:
        """One control request (client/retry.py's policy), retried while the server is
        unreachable or busy. A request that may have arrived is sent again only when
        `idempotent` (by default: the method is); 429 and 503 mean the server did nothing
        and are always retried. `content` is a factory, so a retry streams the body again
        from the start; it is never sent to a redirect target. `buffered` reads the whole
        answer inside the retries, so that one cut short is retried like a lost one."""
        url = self.url(path, params)
        sent = dict(headers or {})
        data = None
        if json_body is not None:
            sent["Content-Type"] = "application/json"
            data = json.dumps(json_body).encode()
        safe = method in IDEMPOTENT if idempotent is None else idempotent
        attempts = self.backoff.attempts
        for attempt in range(1, attempts + 2):
            try:
                if content is None:
                    resp = self.open(method, url, sent, data)
                else:
                    resp = self._send(method, url, sent, content())
                if buffered and resp.status not in RETRY_STATUSES:
                    resp.buffer(MAX_JSON_BODY)
            except NetworkError as e:
                refused = isinstance(e.__cause__, ConnectionRefusedError)
                if attempt > attempts or not (refused or safe):
                    raise
                pause = self.backoff.pause(attempt)
                announce = announce_unreachable if isinstance(e, Unreachable) else announce_lost
                announce(url, e, pause, attempt, attempts)
                time.sleep(pause)
                continue
            if (
                resp.status in RETRY_STATUSES
                and attempt <= attempts
                and (safe or resp.status in REFUSED)
            ):
                pause = self.backoff.pause(attempt, resp.header("Retry-After"))
                resp.close()
                announce_status(url, resp.status, pause, attempt, attempts)
                time.sleep(pause)
                continue
            return resp
        raise AssertionError("unreachable: the last attempt returns or raises")

    def json(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """One API call through `request`, its answer parsed as JSON; an error answer
        raises the server's exception class."""
        sent = {"Accept": "application/json", **(headers or {})}
        resp = self.request(
            method,
            path,
            params=params,
            json_body=body,
            headers=sent,
            idempotent=idempotent,
            buffered=True,
        )
        return self._read_json(resp, method, path)

    def _read_json(self, resp: Response, method: str, path: str) -> Any:
        resp.raise_for_error()
        resp.close()
        try:
            return json.loads(resp.read())
        except ValueError as e:
            raise TunevaultError(f"{method} {path}: the server sent invalid JSON") from e


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
