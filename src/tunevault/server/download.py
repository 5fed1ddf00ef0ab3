"""`GET /v1/finetune/download`: parse, authorize, resolve (tunevault.service.downloads), send."""

from __future__ import annotations

import functools

from aiohttp import web

from tunevault.models import Principal
from tunevault.server.blob import BlobRef
from tunevault.server.context import principal, services
from tunevault.server.query import parse_download_query
from tunevault.server.resolving import serve_resolved
from tunevault.server.sending import Subject, send_download
from tunevault.service.downloads import Resolved, resolve

routes = web.RouteTableDef()


@routes.get("/v1/finetune/download")
async def download(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    query = request.rel_url.query
    q = parse_download_query({k: query.getall(k) for k in set(query.keys())})
    svc = services(request)
    return await serve_resolved(
        request,
        ("download", who.org_id, q),
        functools.partial(resolve, svc, who.org_id, q),
        functools.partial(serve_archive, request, who),
    )


async def serve_archive(
    request: web.Request, who: Principal, found: Resolved
) -> web.StreamResponse:
    """Send a resolved checkpoint's archive, audited under `who.key_id` (the API's key, the
    console's session key, or a share link's `share:<id>`)."""
    ft, ckpt, archive = found.ft, found.ckpt, found.archive
    blob = BlobRef(
        key=archive.storage_key, size=archive.size, sha256=archive.sha256, filename=found.filename
    )
    subject = Subject(ft_id=ft.id, step=ckpt.step, kind=ckpt.kind.value)
    return await send_download(request, who, blob, subject)
