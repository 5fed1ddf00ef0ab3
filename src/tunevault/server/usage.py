"""`GET /v1/admin/usage`: the caller's organization's stored bytes and quota (admin scope)."""

from __future__ import annotations

from aiohttp import web

from tunevault.models import OrgUsage, Scope
from tunevault.server.context import blocking, principal, services
from tunevault.service import usage

routes = web.RouteTableDef()


def usage_json(u: OrgUsage) -> dict[str, object]:
    return {
        "org_id": u.org_id,
        "org": u.org,
        "source_bytes": u.source_bytes,
        "derived_bytes": u.derived_bytes,
        "archive_bytes": u.archive_bytes,
        "merged_bytes": u.merged_bytes,
        "source_quota_bytes": u.source_quota_bytes,
    }


@routes.get("/v1/admin/usage")
async def org_usage(request: web.Request) -> web.Response:
    who = principal(request, Scope.ADMIN)
    found = await blocking(usage.org_usage, services(request), who.org_id)
    return web.json_response(usage_json(found))
