"""`GET /v1/finetune/download`: parse, authorize, resolve (tunevault.service.downloads), send."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime

from aiohttp import web

from tunevault.errors import TunevaultError
from tunevault.models import DownloadRecord
from tunevault.server.audit import AUDIT
from tunevault.server.blob import BlobRef, choose_range, send_blob
from tunevault.server.clients import client_address
from tunevault.server.context import LIMITS, blocking, principal, services
from tunevault.server.observability import METRICS
from tunevault.server.query import parse_download_query
from tunevault.service.downloads import resolve

routes = web.RouteTableDef()


def _printable(text: str) -> str:
    """Header text as the database can store it: raw bytes arrive as surrogates."""
    return text.encode("utf-8", "replace").decode()[:300]


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
    metrics = request.app[METRICS]
    mode = svc.settings.serve_mode
    # 499 (nginx's "client closed request") unless the answer goes out whole.
    status: int | None = 499
    sent = planned = start = 0
    # Download slots bound the bytes this process sends; a redirect or an X-Accel answer
    # hands the sending to the object store or nginx, and takes none.
    slot = request.app[LIMITS].download(who) if mode == "proxy" else nullcontext()
    with slot:
        metrics.downloads_in_flight.inc()
        try:
            span = choose_range(request, blob)
            # Known before the first byte: a download cut short is audited with its range.
            start = span.start if span is not None else 0
            if mode == "proxy":  # else the object store or nginx sends the bytes
                planned = span.length if span is not None else blob.size
            resp = await send_blob(request, svc, blob, span)
        except (web.HTTPException, TunevaultError):
            status = None  # a validator or range answer (304, 412, 416): nothing was sent
            raise
        else:
            status = resp.status
            sent = planned if mode == "proxy" and request.method == "GET" else 0
            metrics.bytes_served.labels(mode).inc(sent)
            return resp
        finally:
            metrics.downloads_in_flight.dec()
            if status is not None:
                request.app[AUDIT].add(
                    DownloadRecord(
                        created_at=datetime.now(UTC),
                        org_id=who.org_id,
                        key_id=who.key_id,
                        ft_id=ft.id,
                        step=ckpt.step,
                        kind=ckpt.kind.value,
                        archive_sha256=archive.sha256,
                        range_start=start,
                        bytes_planned=planned,
                        bytes_sent=sent,
                        status=status,
                        mode=mode,
                        client=client_address(request),
                        user_agent=_printable(request.headers.get("User-Agent", "")) or None,
                    ),
                )
