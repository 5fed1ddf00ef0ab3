"""`GET /v1/finetune/download`: parse, authorize, resolve (tunevault.service.downloads), send.

An archive evicted from the derived cache (tunevault.service.cache) is rebuilt on demand.
tunevault's own client is answered 409 with Retry-After at once and waits visibly; other
clients (the together CLI reports any non-200 as "not downloadable", the SDK gives up
after two retries) are held inside the request while the rebuild's estimate fits
`rebuild_hold_seconds`, then served the bytes.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from tunevault.errors import ArchiveNotReady
from tunevault.models import Principal
from tunevault.server.blob import BlobRef
from tunevault.server.context import blocking, principal, services
from tunevault.server.query import parse_download_query
from tunevault.server.sending import Subject, send_download
from tunevault.service.downloads import REBUILD_HEADER, DownloadQuery, Resolved, resolve

routes = web.RouteTableDef()
TUNEVAULT_CLIENT = "tunevault-client/"  # its User-Agent (tunevault.client.http)
POLL_SECONDS = 0.5  # how often a held request looks at its rebuild again


@routes.get("/v1/finetune/download")
async def download(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    query = request.rel_url.query
    q = parse_download_query({k: query.getall(k) for k in set(query.keys())})
    found = await _resolve_held(request, who, q)
    try:
        return await serve_archive(request, who, found)
    except FileNotFoundError:  # evicted between the lookup and the read: rebuild it
        return await serve_archive(request, who, await _resolve_held(request, who, q))


async def _resolve_held(request: web.Request, who: Principal, q: DownloadQuery) -> Resolved:
    """Resolve; for a rebuild a client other than tunevault's would not wait for, wait
    here while the estimate fits the hold, asking the queue again every POLL_SECONDS."""
    svc = services(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + svc.settings.rebuild_hold_seconds
    held = not request.headers.get("User-Agent", "").startswith(TUNEVAULT_CLIENT)
    while True:
        try:
            return await blocking(resolve, svc, who.org_id, q)
        except ArchiveNotReady as e:
            left = deadline - loop.time()
            eta = float(e.headers.get("Tunevault-Build-Eta", "inf"))
            if not held or e.headers.get(REBUILD_HEADER) is None or eta > left:
                raise
            await asyncio.sleep(min(POLL_SECONDS, left))


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
