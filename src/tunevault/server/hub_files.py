"""`GET|HEAD /{repo_id}/resolve/{revision}/{path}`: one file of a revision, as the Hub
serves it (docs/hub.md).

The bytes take the archive's path (`blob.send_blob`: sendfile, a presigned redirect or
X-Accel), with the file's sha256 as ETag. `huggingface_hub` reads the file's metadata from
a HEAD, then GETs the body, from the redirect's target when there is one: so a GET is a
download, and so is a HEAD answered with a redirect (the URL it hands out is one). Those are
audited and counted like archive downloads; a HEAD read for metadata is not.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from tunevault.errors import EntryNotFound, TunevaultError
from tunevault.layout import blob_key
from tunevault.models import DownloadRecord, Principal
from tunevault.server.audit import AUDIT
from tunevault.server.blob import BlobRef, choose_range, send_blob
from tunevault.server.context import LIMITS, blocking, principal, services
from tunevault.server.download import _printable
from tunevault.server.hub import REPO
from tunevault.server.observability import METRICS
from tunevault.service.hub import Snapshot, open_snapshot

routes = web.RouteTableDef()
RESOLVE = f"/{REPO}/resolve/{{revision}}/{{path:.+}}"


@dataclass(frozen=True)
class HubBlob(BlobRef):
    """A file of a revision: the blob's headers plus those `huggingface_hub` reads
    (`X-Repo-Commit`, and `X-Linked-*`, which it prefers and reads on redirects)."""

    commit: str

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        headers["X-Repo-Commit"] = self.commit
        headers["X-Linked-Etag"] = self.etag
        headers["X-Linked-Size"] = str(self.size)
        return headers


@routes.get(RESOLVE)  # and HEAD, which aiohttp routes to the same handler
async def resolve_file(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    repo_id, revision = request.match_info["repo_id"], request.match_info["revision"]
    path = request.match_info["path"]
    svc = services(request)
    snap = await blocking(open_snapshot, svc, who.org_id, repo_id, revision)
    entry = snap.file(path)
    if entry is None:
        raise EntryNotFound(
            f"{repo_id} has no file {path[:300]!r} at revision {revision}; "
            f"GET /api/models/{repo_id}/tree/{revision}?recursive=true lists its files",
            headers={"X-Repo-Commit": snap.commit},
        )
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", entry.path.rsplit("/", 1)[-1])
    blob = HubBlob(
        key=blob_key(entry.sha256),
        size=entry.size,
        sha256=entry.sha256,
        filename=name,
        commit=snap.commit,
    )
    if request.method == "HEAD" and svc.settings.serve_mode != "redirect":
        span = choose_range(request, blob)
        return await send_blob(request, svc, blob, span)
    return await _download(request, who, snap, blob)


async def _download(
    request: web.Request, who: Principal, snap: Snapshot, blob: HubBlob
) -> web.StreamResponse:
    """Send (or hand out) the file, holding a download slot, counted and audited."""
    svc = services(request)
    metrics = request.app[METRICS]
    mode = svc.settings.serve_mode
    # 499 (nginx's "client closed request") unless the answer goes out whole.
    status: int | None = 499
    sent = planned = start = 0
    slot = request.app[LIMITS].download(who) if mode == "proxy" else nullcontext()
    with slot:
        metrics.downloads_in_flight.inc()
        try:
            span = choose_range(request, blob)
            start = span.start if span is not None else 0
            if mode == "proxy":  # else the object store or nginx sends the bytes
                planned = span.length if span is not None else blob.size
            # Signed for GET even when a HEAD asks: the client GETs the URL a HEAD returns.
            resp = await send_blob(request, svc, blob, span, "GET")
        except (web.HTTPException, TunevaultError):
            status = None  # a validator or range answer (304, 412, 416): nothing was sent
            raise
        else:
            status = resp.status
            sent = planned if mode == "proxy" else 0
            metrics.bytes_served.labels(mode).inc(sent)
            return resp
        finally:
            metrics.downloads_in_flight.dec()
            if status is not None:
                record = _record(request, who, snap, blob, start, planned, sent, status)
                request.app[AUDIT].add(record)


def _record(
    request: web.Request,
    who: Principal,
    snap: Snapshot,
    blob: HubBlob,
    start: int,
    planned: int,
    sent: int,
    status: int,
) -> DownloadRecord:
    return DownloadRecord(
        created_at=datetime.now(UTC),
        org_id=who.org_id,
        key_id=who.key_id,
        # A base model has no fine-tune: its name stands in (the column holds 64 characters).
        ft_id=snap.ft_id or snap.repo_id[:64],
        step=snap.step,
        kind=f"hub:{snap.kind}",
        archive_sha256=blob.sha256,  # the file's: hub downloads are one file each
        range_start=start,
        bytes_planned=planned,
        bytes_sent=sent,
        status=status,
        mode=services(request).settings.serve_mode,
        client=request.remote,
        user_agent=_printable(request.headers.get("User-Agent", "")) or None,
    )
