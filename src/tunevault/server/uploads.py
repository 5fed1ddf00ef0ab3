"""Blob uploads: `PUT /v1/publish/blobs/{sha256}`, resumable, verified while they stream.

Bytes are appended to a per-organization staging file and hashed as they arrive (never
held whole in memory). A dropped connection keeps what arrived, and `HEAD` reports the
offset to resume from. Only when the last byte is in and the digest matches does the blob
enter storage; a mismatch leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from tunevault.archive.checksums import BlobHasher
from tunevault.errors import (
    Conflict,
    DigestMismatch,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    UploadOffsetMismatch,
)
from tunevault.models import Scope
from tunevault.server.bodies import BlobDigests, parse
from tunevault.server.context import blocking, json_body, principal, services
from tunevault.server.observability import METRICS
from tunevault.service.context import Services
from tunevault.service.publishing import SHA256_HEX
from tunevault.service.uploads import (
    BUFFER,
    append,
    commit_blob,
    hash_prefix,
    open_part,
    owned_blob_sizes,
    staged_offset,
    staging_path,
)
from tunevault.service.usage import check_missing, check_quota

routes = web.RouteTableDef()
MAX_BLOB = 1 << 40
_active: set[tuple[str, str]] = set()


def _digest(request: web.Request) -> str:
    sha = request.match_info["sha256"]
    if not SHA256_HEX.fullmatch(sha):  # match() would let a trailing newline through
        raise InvalidRequest(
            "a blob is named by its sha256: 64 lower-case hex digits", param="sha256"
        )
    return sha


def _header_int(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.headers.get(name)
    if raw is None:
        if default is None:
            raise InvalidRequest(f"the {name} header is required", param=name)
        return default
    if not re.fullmatch(r"[0-9]{1,15}", raw.strip()) or int(raw) > MAX_BLOB:  # ASCII only
        raise InvalidRequest(f"{name} must be an integer from 0 to {MAX_BLOB}", param=name)
    return int(raw)


@routes.post("/v1/publish/blobs/check")
async def check_blobs(request: web.Request) -> web.Response:
    who = principal(request, Scope.PUBLISH)
    body = parse(BlobDigests, await json_body(request))
    digests, svc = body.sha256, services(request)
    if body.sizes is not None:  # refused before any byte is sent
        await blocking(check_missing, svc, who.org_id, dict(zip(digests, body.sizes, strict=True)))
    owned = await blocking(owned_blob_sizes, svc, who.org_id, digests)
    return web.json_response({"missing": sorted(set(digests) - set(owned))})


@routes.head("/v1/publish/blobs/{sha256}")
async def head_blob(request: web.Request) -> web.Response:
    who = principal(request, Scope.PUBLISH)
    sha = _digest(request)
    svc = services(request)
    owned = await blocking(owned_blob_sizes, svc, who.org_id, [sha])
    if sha in owned:
        return web.Response(headers={"Content-Length": str(owned[sha])})
    kept = await blocking(staged_offset, svc, who.org_id, sha)
    raise NotFound(f"blob {sha} is not uploaded", headers={"Upload-Offset": str(kept)})


@routes.put("/v1/publish/blobs/{sha256}")
async def put_blob(request: web.Request) -> web.Response:
    who = principal(request, Scope.PUBLISH)
    sha = _digest(request)
    total = _header_int(request, "Upload-Length")
    offset = _header_int(request, "Upload-Offset", 0)
    svc = services(request)
    owned = await blocking(owned_blob_sizes, svc, who.org_id, [sha])
    if sha in owned:
        return web.json_response({"sha256": sha, "size": owned[sha]})
    await blocking(check_quota, svc, who.org_id, total)  # before reading the body
    slot = (who.org_id, sha)
    if slot in _active:
        raise Conflict(f"another upload of blob {sha} is in progress; retry when it ends")
    _active.add(slot)
    try:
        return await _receive(request, svc, who.org_id, sha, total, offset)
    finally:
        _active.discard(slot)


async def _receive(
    request: web.Request, svc: Services, org_id: str, sha: str, total: int, offset: int
) -> web.Response:
    part = staging_path(svc, org_id, sha)
    part.parent.mkdir(parents=True, exist_ok=True)
    f = await blocking(open_part, part)
    try:  # the lock lasts until the blob is committed: gc never takes a live part
        kept = os.fstat(f.fileno()).st_size
        if offset != kept:
            if not kept:
                part.unlink(missing_ok=True)  # opening created it; no upload is under way
            raise UploadOffsetMismatch(
                f"this upload resumes at byte {kept}, not {offset}",
                headers={"Upload-Offset": str(kept)},
            )
        kept, hasher = await _stream(request, f, part, kept, total)
        if kept < total:
            return web.json_response(
                {"offset": kept}, status=202, headers={"Upload-Offset": str(kept)}
            )
        if hasher.sha256() != sha:
            part.unlink(missing_ok=True)
            raise DigestMismatch(
                f"the uploaded bytes hash to {hasher.sha256()}, not {sha}; nothing was kept",
                param="sha256",
            )
        try:
            await blocking(commit_blob, svc, org_id, sha, total, part, hasher.xxh3())
        except InsufficientStorage:
            part.unlink(missing_ok=True)  # an unstorable upload leaves no debris
            raise
    finally:
        await blocking(f.close)
    return web.json_response({"sha256": sha, "size": total}, status=201)


async def _stream(
    request: web.Request, f: Any, part: Path, kept: int, total: int
) -> tuple[int, BlobHasher]:
    """Append the body to the part, hashing as it goes: the new offset and the hasher."""
    hasher = await blocking(hash_prefix, part) if kept else BlobHasher()
    buf, received = bytearray(), request.app[METRICS].upload_bytes
    try:
        async for chunk in request.content.iter_chunked(BUFFER):
            if kept + len(buf) + len(chunk) > total:
                raise InvalidRequest(
                    f"the body is longer than Upload-Length ({total})", param="Upload-Length"
                )
            buf += chunk
            if len(buf) >= BUFFER:
                await blocking(append, f, hasher, buf)
                received.inc(len(buf))
                kept, buf = kept + len(buf), bytearray()
        if buf:
            await blocking(append, f, hasher, buf)
            received.inc(len(buf))
            kept, buf = kept + len(buf), bytearray()
    except (InvalidRequest, InsufficientStorage):
        part.unlink(missing_ok=True)  # a refused or unstorable upload leaves no debris
        raise
    except BaseException:
        # The client went away: keep every byte that arrived, for a resume.
        with contextlib.suppress(Exception):
            await blocking(append, f, hasher, buf)
        raise
    return kept, hasher
