"""`GET /v1/finetune/download`: parse, authorize, resolve (tunevault.service.downloads), send.

An archive evicted from the derived cache (tunevault.service.cache) is rebuilt on demand.
A request with `Prefer: respond-async` (RFC 7240; tunevault's own client sends it) is
answered 409 with Retry-After at once and waits visibly; any other (the together CLI
reports any non-200 as "not downloadable", the SDK gives up after two retries) is held
inside the request while the rebuild's estimate fits `rebuild_hold_seconds`, then served
the bytes. A held request polls with reads only: the rebuild was queued once.
"""

from __future__ import annotations

import asyncio
import functools

from aiohttp import web
from yarl import URL

from tunevault.errors import ArchiveNotReady
from tunevault.models import Principal
from tunevault.server.blob import BlobRef, describe
from tunevault.server.context import blocking, principal, services
from tunevault.server.query import parse_download_query
from tunevault.server.resolving import serve_resolved
from tunevault.server.sending import Subject, send_download
from tunevault.service.downloads import REBUILD_HEADER, DownloadQuery, Resolved, resolve

routes = web.RouteTableDef()
RESPOND_ASYNC = "respond-async"  # the preference that asks for the 409 rather than a hold
POLL_SECONDS = 0.5  # how often a held request looks at its rebuild again


@routes.get("/v1/finetune/download")
async def download(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    q = _parsed(request.rel_url.raw_query_string)
    serve = describe_archive if request.method == "HEAD" else serve_archive
    held = not prefers_async(request)  # part of the key: held or not, a rebuild answers apart
    return await serve_resolved(
        request,
        ("download", who.org_id, q, held),
        functools.partial(_resolve_held, request, who, q, held),
        functools.partial(serve, request, who),
    )


async def _resolve_held(
    request: web.Request, who: Principal, q: DownloadQuery, held: bool
) -> Resolved:
    """Resolve; for a rebuild, when `held` (the request does not prefer respond-async),
    wait here while the estimate fits the hold, asking the queue again (reads only)
    every POLL_SECONDS."""
    svc = services(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + svc.settings.rebuild_hold_seconds
    while True:
        try:
            return await blocking(resolve, svc, who.org_id, q)
        except ArchiveNotReady as e:
            left = deadline - loop.time()
            eta = float(e.headers.get("Tunevault-Build-Eta", "inf"))
            rebuild = e.headers.get(REBUILD_HEADER) is not None
            if rebuild and not held:  # the one answer the preference changes
                e.headers["Preference-Applied"] = RESPOND_ASYNC
            if not held or not rebuild or eta > left:
                raise
            await asyncio.sleep(min(POLL_SECONDS, left))


@functools.lru_cache(maxsize=1024)  # a fleet asks the same few queries again and again
def _parsed(raw: str) -> DownloadQuery:
    """The download query of a raw query string (a refusal raises, and is not kept)."""
    query = URL.build(query_string=raw, encoded=True).query
    return parse_download_query({k: query.getall(k) for k in set(query.keys())})


def prefers_async(request: web.Request) -> bool:
    """Whether a `Prefer` header (RFC 7240: comma-separated `token[=value][; param]`, in
    any number of headers) names respond-async."""
    prefs = ",".join(request.headers.getall("Prefer", ())).split(",")
    return any(p.split(";")[0].split("=")[0].strip().lower() == RESPOND_ASYNC for p in prefs)


async def describe_archive(request: web.Request, _who: Principal, found: Resolved) -> web.Response:
    """HEAD: the headers a GET would answer with (size, ETag, digest, the span of a Range)
    and neither bytes nor a presigned URL: a question about the archive, not a download,
    so it is not audited. While the archive is being built, `resolve` raised the 409."""
    return describe(request, _blob_of(found))


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
