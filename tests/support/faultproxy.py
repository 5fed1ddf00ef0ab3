"""A fault-injecting HTTP/1.1 proxy on loopback, between a client and a real server.

Each proxied request gets its own upstream connection (the proxy forces
`Connection: close`), so faults apply per request. Faults are queued: each download
request (of an archive, or a GET of a Hub file) takes the next one (other requests, and
downloads once the queue is empty, get `default`). A fault can cut the response after N
body bytes, flip the byte at archive offset K (located with Content-Range, so it works for
ranged responses too), strip Range/If-Range so the server answers 200, or stall after N
body bytes until released.
Every exchange is logged with the request headers and the body bytes forwarded.
"""

from __future__ import annotations

import re
import socket
import threading
from collections import deque
from dataclasses import dataclass, field

HEAD_LIMIT = 64 << 10
RECV = 256 << 10
STALL_LIMIT_S = 60.0


@dataclass(frozen=True)
class Fault:
    cut_after: int | None = None  # body bytes forwarded before the connection is cut
    corrupt_at: int | None = None  # absolute offset in the archive of a byte to flip
    strip_range: bool = False  # drop Range and If-Range: the server sends the whole body
    stall_after: int | None = None  # body bytes forwarded before waiting for release()


@dataclass
class Exchange:
    path: str
    headers: dict[str, str]
    download: bool = False
    status: int = 0
    head_bytes: int = 0  # the response head as sent to the client, blank line included
    body_bytes: int = 0
    fault: Fault = field(default_factory=Fault)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(RECV)
        if not data:
            raise ConnectionError("peer closed before the end of the head")
        buf += data
        if len(buf) > HEAD_LIMIT and b"\r\n\r\n" not in buf:
            raise ConnectionError("head too large")
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _headers(lines: list[bytes]) -> dict[str, str]:
    out = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        out[name.strip().lower()] = value.strip()
    return out


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        m = re.match(r"^http://([^:/]+):(\d+)$", upstream.rstrip("/"))
        assert m, upstream
        self.upstream = (m.group(1), int(m.group(2)))
        self.faults: deque[Fault] = deque()
        self.default = Fault()
        self.log: list[Exchange] = []
        self.stalled = threading.Event()  # set when a stall fault is holding a response
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def push(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def release(self) -> None:
        self._release.set()

    def downloads(self) -> list[Exchange]:
        with self._lock:
            return [e for e in self.log if e.download]

    def close(self) -> None:
        self._closed = True
        self._release.set()
        self._server.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            with client, socket.create_connection(self.upstream) as upstream:
                self._proxy(client, upstream)
        except OSError:
            pass  # either side went away: that is what faults are for

    def _proxy(self, client: socket.socket, upstream: socket.socket) -> None:
        head, rest = _read_head(client)
        request_line, *lines = head.split(b"\r\n")
        method, target = request_line.split(b" ")[:2]
        path = target.decode("latin-1")
        # Archive downloads, and GETs of a Hub file (its HEAD reads metadata only).
        is_download = "/finetune/download" in path or (method == b"GET" and "/resolve/" in path)
        with self._lock:
            fault = self.faults.popleft() if is_download and self.faults else self.default
            exchange = Exchange(path, _headers(lines), download=is_download, fault=fault)
            self.log.append(exchange)
        dropped = {b"connection", b"keep-alive"}
        if fault.strip_range:
            dropped |= {b"range", b"if-range"}
        kept = [ln for ln in lines if ln.split(b":", 1)[0].strip().lower() not in dropped]
        upstream.sendall(b"\r\n".join([request_line, *kept, b"Connection: close", b"", b""]) + rest)
        # The request body may arrive after the head: forward all of it, or a POST hangs.
        left = int(exchange.headers.get("content-length", "0") or 0) - len(rest)
        while left > 0 and (data := client.recv(min(RECV, left))):
            upstream.sendall(data)
            left -= len(data)
        self._respond(client, upstream, exchange, fault)

    def _respond(
        self, client: socket.socket, upstream: socket.socket, ex: Exchange, fault: Fault
    ) -> None:
        head, body = _read_head(upstream)
        status_line, *lines = head.split(b"\r\n")
        ex.status = int(status_line.split(b" ")[1])
        cr = re.match(r"bytes (\d+)-", _headers(lines).get("content-range", ""))
        offset = int(cr.group(1)) if cr and ex.status == 206 else 0
        client.sendall(head + b"\r\n\r\n")
        ex.head_bytes = len(head) + 4
        limit = fault.cut_after if fault.cut_after is not None else fault.stall_after
        while True:
            if limit is not None and ex.body_bytes + len(body) > limit:
                body = body[: limit - ex.body_bytes]
            if fault.corrupt_at is not None and ex.status < 300:
                at = fault.corrupt_at - offset - ex.body_bytes
                if 0 <= at < len(body):
                    body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]
            view = memoryview(body)
            while view:  # counted send by send: the count is what reached the socket
                n = client.send(view)
                view = view[n:]
                ex.body_bytes += n
            if limit is not None and ex.body_bytes >= limit:
                break
            body = upstream.recv(RECV)
            if not body:
                return
        if fault.stall_after is not None:
            self.stalled.set()
            self._release.wait(STALL_LIMIT_S)
        # Cut: the connection closes (FIN) with the response incomplete.
