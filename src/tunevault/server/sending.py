"""Sending a download: one of the key's download slots, the in-flight gauge, the bytes
counter and the audit row, around `blob.send_blob`. Archive downloads and Hub files (and
anything else handed out as a download) go through here, so each is limited, counted and
audited the same way."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from tunevault.errors import TunevaultError
from tunevault.models import ARCHIVE_KINDS, DownloadRecord, Principal
from tunevault.server.audit import AUDIT
from tunevault.server.blob import BlobRef, choose_range, send_blob
from tunevault.server.clients import client_address
from tunevault.server.context import LIMITS, services
from tunevault.server.observability import METRICS


@dataclass(frozen=True)
class Subject:
    """What the audit row says was downloaded."""

    ft_id: str
    step: int
    kind: str

    @property
    def archive(self) -> bool:
        """A built archive (the cache's LRU order dates it), not a Hub file."""
        return self.kind in ARCHIVE_KINDS


@dataclass
class _Transfer:
    # 499 (nginx's "client closed request") unless the answer goes out whole; None when
    # a validator or range answer (304, 412, 416) sent nothing.
    status: int | None = 499
    start: int = 0
    planned: int = 0
    sent: int = 0


async def send_download(
    request: web.Request,
    who: Principal,
    blob: BlobRef,
    subject: Subject,
    presign_method: str | None = None,
) -> web.StreamResponse:
    """Answer with the blob (or hand it out), held to the key's limits, counted, audited."""
    mode = services(request).settings.serve_mode
    metrics = request.app[METRICS]
    t = _Transfer()
    # Download slots bound the bytes this process sends; a redirect or an X-Accel answer
    # hands the sending to the object store or nginx, and takes none.
    slot = request.app[LIMITS].download(who) if mode == "proxy" else nullcontext()
    with slot:
        metrics.downloads_in_flight.inc()
        try:
            span = choose_range(request, blob)
            if subject.archive:  # the cache's LRU order (service/cache.py)
                request.app[AUDIT].began(blob.sha256)
            # Known before the first byte: a download cut short is audited with its range.
            t.start = span.start if span is not None else 0
            if mode == "proxy":  # else the object store or nginx sends the bytes
                t.planned = span.length if span is not None else blob.size
            resp = await send_blob(request, services(request), blob, span, presign_method)
        except (web.HTTPException, TunevaultError, FileNotFoundError):
            # Nothing was answered (a blob gone before its first byte is resolved again).
            t.status = None
            raise
        else:
            t.status = resp.status
            t.sent = t.planned if mode == "proxy" and request.method == "GET" else 0
            metrics.bytes_served.labels(mode).inc(t.sent)
            return resp
        finally:
            metrics.downloads_in_flight.dec()
            if t.status is not None:
                request.app[AUDIT].add(_record(request, who, blob, subject, t, mode))


def _record(
    request: web.Request,
    who: Principal,
    blob: BlobRef,
    subject: Subject,
    t: _Transfer,
    mode: str,
) -> DownloadRecord:
    assert t.status is not None
    return DownloadRecord(
        created_at=datetime.now(UTC),
        org_id=who.org_id,
        key_id=who.key_id,
        ft_id=subject.ft_id,
        step=subject.step,
        kind=subject.kind,
        archive_sha256=blob.sha256,
        range_start=t.start,
        bytes_planned=t.planned,
        bytes_sent=t.sent,
        status=t.status,
        mode=mode,
        client=client_address(request),
        user_agent=_printable(request.headers.get("User-Agent", "")) or None,
    )


def _printable(text: str) -> str:
    """Header text as the database can store it: raw bytes arrive as surrogates."""
    return text.encode("utf-8", "replace").decode()[:300]
