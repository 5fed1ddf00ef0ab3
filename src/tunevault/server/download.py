"""`GET /v1/finetune/download`: parse, authorize, resolve (tunevault.service.downloads), send."""

from __future__ import annotations

from aiohttp import web

from tunevault.models import Principal
from tunevault.server.blob import BlobRef
from tunevault.server.context import blocking, principal, services
from tunevault.server.query import parse_download_query
from tunevault.server.sending import Subject, send_download
from tunevault.service.downloads import Resolved, resolve

routes = web.RouteTableDef()


@routes.get("/v1/finetune/download")
async def download(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    query = request.rel_url.query
    q = parse_download_query({k: query.getall(k) for k in set(query.keys())})
    found = await blocking(resolve, services(request), who.org_id, q)
    if request.method == "HEAD":
        return describe_archive(found)
    return await serve_archive(request, who, found)


def describe_archive(found: Resolved) -> web.Response:
    """HEAD: the headers a GET would answer with (size, ETag, digest), and neither bytes nor
    a presigned URL: a question about the archive, not a download, so it is not audited.
    While the archive is being built, `resolve` raised the same 409 a GET gets."""
    blob = _blob_of(found)
    return web.Response(headers={**blob.headers(), "Content-Length": str(blob.size)})


def _blob_of(found: Resolved) -> BlobRef:
    archive = found.archive
    return BlobRef(
        key=archive.storage_key, size=archive.size, sha256=archive.sha256, filename=found.filename
    )


async def serve_archive(
    request: web.Request, who: Principal, found: Resolved
) -> web.StreamResponse:
    """Send a resolved checkpoint's archive, audited under `who.key_id` (the API's key, the
    console's session key, or a share link's `share:<id>`)."""
    subject = Subject(ft_id=found.ft.id, step=found.ckpt.step, kind=found.ckpt.kind.value)
    return await send_download(request, who, _blob_of(found), subject)
