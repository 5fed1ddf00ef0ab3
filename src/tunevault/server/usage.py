"""`GET /v1/admin/usage`: the caller's organization's stored bytes and quota (admin scope)."""

from __future__ import annotations

from aiohttp import web

from tunevault.models import Scope
from tunevault.server.context import blocking, principal, services
from tunevault.service import usage

routes = web.RouteTableDef()


@routes.get("/v1/admin/usage")
async def org_usage(request: web.Request) -> web.Response:
    who = principal(request, Scope.ADMIN)
    found = await blocking(usage.org_usage, services(request), who.org_id)
    return web.json_response(found.as_json())
