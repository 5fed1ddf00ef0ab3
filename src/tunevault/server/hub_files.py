"""`GET|HEAD /{repo_id}/resolve/{revision}/{path}`: one file of a revision, as the Hub
serves it (docs/hub.md).

The bytes take the archive's path (`blob.send_blob`: sendfile, a presigned redirect or
X-Accel), with the file's sha256 as ETag. `huggingface_hub` reads the file's metadata from
a HEAD, then GETs the body, from the redirect's target when there is one: so a GET is a
download, and so is a HEAD answered with a redirect (the URL it hands out is one). Those are
audited and counted like archive downloads; a HEAD read for metadata is not.
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass

from aiohttp import web

from tunevault.errors import EntryNotFound
from tunevault.layout import blob_key
from tunevault.models import FileEntry, Principal
from tunevault.server.blob import BlobRef, choose_range, describe, send_blob
from tunevault.server.context import blocking, principal, services
from tunevault.server.download import POLL_SECONDS
from tunevault.server.hub import REPO
from tunevault.server.resolving import in_thread, serve_resolved
from tunevault.server.sending import Subject, send_download
from tunevault.service.hub import Snapshot, open_snapshot, store_merged_files

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
    return await serve_resolved(
        request,
        ("hub", who.org_id, repo_id, revision),
        in_thread(open_snapshot, services(request), who.org_id, repo_id, revision),
        functools.partial(_send_file, request, who),
    )


async def _send_file(request: web.Request, who: Principal, snap: Snapshot) -> web.StreamResponse:
    repo_id, revision = request.match_info["repo_id"], request.match_info["revision"]
    path = request.match_info["path"]
    svc = services(request)
    entry = snap.file(path)
    if entry is None:
        raise EntryNotFound(
            f"{repo_id} has no file {path[:300]!r} at revision {revision}; "
            f"GET /api/models/{repo_id}/tree/{revision}?recursive=true lists its files",
            headers={"X-Repo-Commit": snap.commit},
        )
    if entry.sha256 in snap.unstored:
        if request.method == "HEAD" and svc.settings.serve_mode != "redirect":
            return describe(request, _blob(snap, entry))  # from the manifest: no bytes
        snap = await _held_until_stored(request, who, snap, entry)
    blob = _blob(snap, entry)
    if request.method == "HEAD" and svc.settings.serve_mode != "redirect":
        span = choose_range(request, blob)
        return await send_blob(request, svc, blob, span)
    # Signed for GET even when a HEAD asks: the client GETs the URL a HEAD returns.
    # A base model has no fine-tune: its name stands in (the column holds 64 characters).
    subject = Subject(
        ft_id=snap.ft_id or snap.repo_id[:64], step=snap.step, kind=f"hub:{snap.kind}"
    )
    return await send_download(request, who, blob, subject, "GET")


def _blob(snap: Snapshot, entry: FileEntry) -> HubBlob:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", entry.path.rsplit("/", 1)[-1])
    return HubBlob(
        key=blob_key(entry.sha256),
        size=entry.size,
        sha256=entry.sha256,
        filename=name,
        commit=snap.commit,
    )


async def _held_until_stored(
    request: web.Request, who: Principal, snap: Snapshot, entry: FileEntry
) -> Snapshot:
    """Queue the storing of a merged checkpoint's files and hold the request while the
    estimate fits `rebuild_hold_seconds` (huggingface_hub retries a GET that times out,
    resuming, but not a 409); the revision with the file stored, or the 409."""
    svc = services(request)
    repo_id, revision = request.match_info["repo_id"], request.match_info["revision"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + svc.settings.rebuild_hold_seconds
    while entry.sha256 in snap.unstored:
        wait = await blocking(store_merged_files, svc, who.org_id, snap)
        if wait is not None:
            left = deadline - loop.time()
            if float(wait.headers.get("Tunevault-Build-Eta", "inf")) > left:
                raise wait
            await asyncio.sleep(min(POLL_SECONDS, left))
        snap = await blocking(open_snapshot, svc, who.org_id, repo_id, revision)
        found = snap.file(entry.path)
        if found is None or found.sha256 != entry.sha256:  # a new revision meanwhile
            raise EntryNotFound(f"{repo_id} changed at revision {revision}; ask again")
    return snap
