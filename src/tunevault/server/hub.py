"""The Hugging Face Hub's read API, as `huggingface_hub` calls it: model info, the tree
listing and whoami-v2. The files themselves are served by `hub_files`; docs/hub.md.

Repo ids may hold one slash (`org/name`), so every route takes the id with a pattern that
allows it. Field names are the Hub's (camelCase), as `huggingface_hub.hf_api` parses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from tunevault.errors import InvalidRequest
from tunevault.models import FileEntry, Principal, Scope
from tunevault.server.context import blocking, principal, services
from tunevault.server.render import iso
from tunevault.service.hub import MAIN, Snapshot, open_snapshot
from tunevault.service.hub_tree import TreeEntry, file_oid, lfs_pointer, list_tree

routes = web.RouteTableDef()
REPO = "{repo_id:[^/]+(?:/[^/]+)?}"
TREE_PAGE = 1000  # the Hub's own page size for tree listings


def _lfs(entry: FileEntry, sha_field: str) -> dict[str, Any]:
    return {"size": entry.size, sha_field: entry.sha256, "pointerSize": len(lfs_pointer(entry))}


def _sibling(entry: FileEntry) -> dict[str, Any]:
    return {
        "rfilename": entry.path,
        "size": entry.size,
        "blobId": file_oid(entry),
        "lfs": _lfs(entry, "sha256"),
    }


def model_info(snap: Snapshot, who: Principal) -> dict[str, Any]:
    paths = {f.path for f in snap.files}
    library = "peft" if "adapter_config.json" in paths else "transformers"
    return {
        "_id": snap.commit,
        "id": snap.repo_id,
        "modelId": snap.repo_id,
        "author": who.org_name,
        "sha": snap.commit,
        "createdAt": iso(snap.created_at),
        "lastModified": iso(snap.created_at),
        "private": True,
        "disabled": False,
        "gated": False,
        "downloads": 0,
        "likes": 0,
        "library_name": library,
        "tags": ["tunevault", snap.kind, library],
        "siblings": [_sibling(f) for f in snap.files],
        "usedStorage": sum(f.size for f in snap.files),
    }


async def _snapshot(request: web.Request, revision: str) -> tuple[Snapshot, Principal]:
    who = principal(request)
    repo_id = request.match_info["repo_id"]
    snap = await blocking(open_snapshot, services(request), who.org_id, repo_id, revision)
    return snap, who


@routes.get(f"/api/models/{REPO}")
async def get_model(request: web.Request) -> web.Response:
    snap, who = await _snapshot(request, MAIN)
    return web.json_response(model_info(snap, who))


@routes.get(f"/api/models/{REPO}/revision/{{revision}}")
async def get_model_revision(request: web.Request) -> web.Response:
    snap, who = await _snapshot(request, request.match_info["revision"])
    return web.json_response(model_info(snap, who))


def _tree_json(entry: TreeEntry) -> dict[str, Any]:
    if entry.file is None:
        return {"type": "directory", "path": entry.path, "oid": entry.oid, "size": 0}
    return {
        "type": "file",
        "path": entry.path,
        "oid": entry.oid,
        "size": entry.file.size,
        "lfs": _lfs(entry.file, "oid"),
    }


def _page_bounds(query: Mapping[str, str]) -> tuple[int, int]:
    try:
        start = int(query.get("cursor", "0"))
        limit = int(query.get("limit", str(TREE_PAGE)))
    except ValueError:
        raise InvalidRequest("cursor and limit must be integers", param="cursor") from None
    if start < 0 or not 1 <= limit <= TREE_PAGE:
        raise InvalidRequest(f"cursor must be >= 0 and limit 1-{TREE_PAGE}", param="limit")
    return start, limit


@routes.get(f"/api/models/{REPO}/tree/{{revision}}")
@routes.get(f"/api/models/{REPO}/tree/{{revision}}/{{path:.+}}")
async def get_tree(request: web.Request) -> web.Response:
    """One page of the listing; a `Link: <...>; rel="next"` header points at the next."""
    snap, _ = await _snapshot(request, request.match_info["revision"])
    query = request.rel_url.query
    start, limit = _page_bounds(query)
    recursive = query.get("recursive", "false").lower() in ("1", "true")
    entries = list_tree(
        snap.files, request.match_info.get("path", ""), recursive=recursive, commit=snap.commit
    )
    resp = web.json_response([_tree_json(e) for e in entries[start : start + limit]])
    if start + limit < len(entries):
        following = request.url.update_query(cursor=str(start + limit), limit=str(limit))
        resp.headers["Link"] = f'<{following}>; rel="next"'
    resp.headers["X-Repo-Commit"] = snap.commit
    return resp


@routes.get("/api/whoami-v2")
async def whoami_v2(request: web.Request) -> web.Response:
    """The key as a Hub user that belongs to one organization: the key's own."""
    who = principal(request)
    writes = Scope.PUBLISH in who.scopes or Scope.ADMIN in who.scopes
    role = "write" if writes else "read"
    return web.json_response(
        {
            "type": "user",
            "id": who.key_id,
            "name": who.key_name,
            "fullname": who.key_name,
            "orgs": [
                {
                    "type": "org",
                    "id": who.org_id,
                    "name": who.org_name,
                    "fullname": who.org_name,
                    "roleInOrg": "admin" if Scope.ADMIN in who.scopes else role,
                }
            ],
            "auth": {
                "type": "access_token",
                "accessToken": {"displayName": who.key_name, "role": role},
            },
        }
    )
