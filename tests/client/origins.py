"""Tiny loopback HTTP servers that record what they receive: a redirector (the API) and
a blob host (object storage on another origin) that honours Range."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Origin:
    url: str
    seen: list[dict[str, str]] = field(default_factory=list)  # request headers, in order


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def blob_host(
    data: bytes, cut_first_after: int | None = None, *, etag: bool = True
) -> Iterator[Origin]:
    """Serves `data` at any path, like a presigned object-store URL; the first response
    can be cut short to force a resume, and the ETag left out."""
    origin = Origin("")
    sha = hashlib.sha256(data)
    cuts = [cut_first_after] if cut_first_after is not None else []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            origin.seen.append({k.lower(): v for k, v in self.headers.items()})
            start = 0
            m = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if m and self.headers.get("If-Range") in (None, f'"{sha.hexdigest()}"'):
                start = int(m.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            if etag:
                self.send_header("ETag", f'"{sha.hexdigest()}"')
            digest = base64.b64encode(sha.digest()).decode()
            self.send_header("Repr-Digest", f"sha-256=:{digest}:")
            self.send_header(
                "Content-Disposition", 'attachment; filename="../../evil name.tar.zst"'
            )
            self.end_headers()
            body = data[start:]
            if cuts:
                body = body[: cuts.pop()]
                self.close_connection = True
            self.wfile.write(body)

    with serve(Handler) as server:
        origin.url = f"http://127.0.0.1:{server.server_port}"
        yield origin


@contextmanager
def redirector(location: str, status: int = 307) -> Iterator[Origin]:
    """Answers every GET with a redirect to `location` (which keeps the request's query)."""
    origin = Origin("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            origin.seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serve(Handler) as server:
        origin.url = f"http://127.0.0.1:{server.server_port}"
        yield origin
