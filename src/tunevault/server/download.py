"""`GET /v1/finetune/download`: parse, authorize, resolve (tunevault.service.downloads), send."""

from __future__ import annotations

from aiohttp import web

from tunevault.server.blob import BlobRef
from tunevault.server.context import blocking, principal, services
from tunevault.server.query import parse_download_query
from tunevault.server.sending import Subject, send_download
from tunevault.service.downloads import resolve

routes = web.RouteTableDef()


@routes.get("/v1/finetune/download")
async def download(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    query = request.rel_url.query
    q = parse_download_query({k: query.getall(k) for k in set(query.keys())})
    svc = services(request)
    found = await blocking(resolve, svc, who.org_id, q)
    ft, ckpt, archive = found.ft, found.ckpt, found.archive
    blob = BlobRef(
        key=archive.storage_key, size=archive.size, sha256=archive.sha256, filename=found.filename
    )
    subject = Subject(ft_id=ft.id, step=ckpt.step, kind=ckpt.kind.value)
    return await send_download(request, who, blob, subject)
