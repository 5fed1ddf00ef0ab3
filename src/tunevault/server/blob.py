"""Sending an archive's bytes: sendfile from local disk (a small blob from memory,
server/smallblobs.py), or a thread-fed stream otherwise.

The validators are ours, not the filesystem's: the ETag is the archive's sha256, so a
resume with `If-Range` works across replicas and storage backends.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tunevault.server.context import blocking
from tunevault.server.ranges import ByteRange, parse_range
from tunevault.server.smallblobs import small_blob
from tunevault.service.context import Services, translated
from tunevault.storage import Storage, Unsupported
from tunevault.storage.errors import StorageError
from tunevault.storage.inuse import read_lock, try_read_lock

CHUNK = 1 << 20
SNDBUF = 4 << 20


@dataclass(frozen=True)
class BlobRef:
    key: str
    size: int
    sha256: str
    filename: str

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'

    def headers(self) -> dict[str, str]:
        digest = base64.b64encode(bytes.fromhex(self.sha256)).decode()
        return {
            "ETag": self.etag,
            "Repr-Digest": f"sha-256=:{digest}:",
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{self.filename}"',
            "Cache-Control": "private, no-transform",
            "X-Content-Type-Options": "nosniff",
        }


def _etag_listed(header: str, etag: str) -> bool:
    return any(tag.strip() in (etag, "*", f"W/{etag}") for tag in header.split(","))


def describe(request: web.BaseRequest, blob: BlobRef) -> web.Response:
    """A HEAD's answer from what is known of the blob, touching no storage: the headers a
    GET would have (size, ETag, digest, the span of a Range; 304, 412 and 416 as a GET
    gets them), without bytes or a presigned URL."""
    span = choose_range(request, blob)
    headers = blob.headers()
    if span is None:
        return web.Response(headers={**headers, "Content-Length": str(blob.size)})
    headers["Content-Range"] = span.content_range(blob.size)
    return web.Response(status=206, headers={**headers, "Content-Length": str(span.length)})


def choose_range(request: web.BaseRequest, blob: BlobRef) -> ByteRange | None:
    """The span to send, or None for the whole body; raises for 304/412/416 outcomes."""
    if_match = request.headers.get("If-Match")
    if if_match is not None and not _etag_listed(if_match, blob.etag):
        raise web.HTTPPreconditionFailed(headers={"ETag": blob.etag})
    if_none = request.headers.get("If-None-Match")
    if if_none is not None and _etag_listed(if_none, blob.etag):
        raise web.HTTPNotModified(headers={"ETag": blob.etag})
    header = request.headers.get("Range")
    if header is None:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != blob.etag:
        return None  # the client holds other bytes: RFC 9110 says send the whole new body
    return parse_range(header, blob.size)


async def send_blob(
    request: web.Request,
    svc: Services,
    blob: BlobRef,
    span: ByteRange | None,
    presign_method: str | None = None,
) -> web.StreamResponse:
    """Answer with the blob in the configured mode: `span` of it (None: all of it), as
    `choose_range` picked it for this request. A redirect's URL is signed for
    `presign_method` (default: the request's own method). The one module of the server
    that speaks to storage: the byte path, where a domain call per chunk would cost."""
    try:
        return await _send(request, svc, blob, span, presign_method or request.method)
    except StorageError as e:  # before the first byte this becomes the answer
        raise translated(e) from e


async def _send(
    request: web.Request, svc: Services, blob: BlobRef, span: ByteRange | None, presign: str
) -> web.StreamResponse:
    storage, settings = svc.storage, svc.settings
    if settings.serve_mode == "redirect":
        return _redirect(storage, blob, settings.presign_seconds, presign)
    if settings.serve_mode == "x-accel":
        return _x_accel(storage, blob, settings.x_accel_prefix)
    resp = web.StreamResponse(status=200 if span is None else 206, headers=blob.headers())
    start, end = (0, blob.size) if span is None else (span.start, span.end)
    if span is not None:
        resp.headers["Content-Range"] = span.content_range(blob.size)
    resp.content_length = end - start
    try:
        path = storage.local_path(blob.key)
    except Unsupported:
        path = None
    if request.method == "HEAD":
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    if path is not None:
        data = await small_blob(request, path, blob.key, blob.size, blob.sha256)
        if data is not None:  # no file opened: the headers, then the body in one send
            # (one write of both would join them: a copy of the body on Python < 3.12.9)
            await resp.prepare(request)
            await resp.write_eof(data[start:end])  # the whole: no copy
        else:
            await _sendfile(request, resp, path, start, end - start)
    else:
        await _stream(request, resp, storage, blob.key, start, end)
    return resp


def _redirect(storage: Storage, blob: BlobRef, expires: int, method: str) -> web.Response:
    # Archive keys are content-derived and never rewritten, so a client that validated our
    # ETag here may fetch any range of the presigned URL without If-Range.
    # Presigning is ~20 us of CPU and no I/O (bench/presign_bench.py): on the loop.
    url = storage.presigned_url(blob.key, method=method, expires=expires, filename=blob.filename)
    headers = {k: v for k, v in blob.headers().items() if k != "Content-Type"}
    headers.update(
        {"Location": url, "X-Archive-Size": str(blob.size), "Cache-Control": "private, no-store"}
    )
    return web.Response(status=307, headers=headers)


def _x_accel(storage: Storage, blob: BlobRef, prefix: str) -> web.Response:
    storage.local_path(blob.key)  # x-accel needs local storage: fail loudly otherwise
    headers = blob.headers()
    headers["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + blob.key
    headers["X-Archive-Size"] = str(blob.size)
    # nginx sends the file and handles Range itself; our body is empty.
    return web.Response(status=200, headers=headers)


async def _sendfile(
    request: web.Request, resp: web.StreamResponse, path: str, offset: int, count: int
) -> None:
    loop = asyncio.get_running_loop()
    # Opened and closed on the loop: a local archive's inode is cached after its first
    # download, and a thread hop each way cost more than the whole of a small archive's
    # sendfile (BENCHMARKS.md, small archives).
    fobj = Path(path).open("rb")  # noqa: SIM115 - closed below, after the await
    try:
        # The cache evicts no archive being read; only a running eviction makes this wait.
        if not try_read_lock(fobj.fileno()):
            await blocking(read_lock, fobj.fileno())
        await resp.prepare(request)
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        sock = transport.get_extra_info("socket")
        if sock is not None and count > SNDBUF:
            # A bigger send buffer means fewer sendfile calls and event-loop wakeups per
            # byte (no bench isolates its share of the serving figures, BENCHMARKS.md).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        # count=0 is refused; over TLS asyncio falls back to copying chunks itself.
        if count:
            await loop.sendfile(transport, fobj, offset, count)
        await resp.write_eof()
    finally:
        fobj.close()


async def _stream(
    request: web.Request,
    resp: web.StreamResponse,
    storage: Storage,
    key: str,
    start: int,
    end: int,
) -> None:
    reader = await blocking(storage.open_read, key, start, end)
    try:
        await resp.prepare(request)
        while chunk := await blocking(reader.read, CHUNK):
            await resp.write(chunk)
        await resp.write_eof()
    finally:
        await blocking(reader.close)
