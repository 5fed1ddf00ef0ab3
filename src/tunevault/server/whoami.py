"""`/v3/whoami` and `/v1/whoami`: the 3.x and 2.x CLIs call them before anything else."""

from __future__ import annotations

import re

from aiohttp import web

from tunevault.server.context import principal

routes = web.RouteTableDef()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "default"


@routes.get("/v3/whoami")
async def whoami_v3(request: web.Request) -> web.Response:
    who = principal(request)
    org = {"id": who.org_id, "name": who.org_name}
    # tunevault has no projects: each organization is its own single project.
    project = {**org, "slug": _slug(who.org_name)}
    return web.json_response(
        {
            "type": "project_api_key",
            "api_key": {
                "id": who.key_id,
                "name": who.key_name,
                "scopes": sorted(s.value for s in who.scopes),
            },
            "organization": org,
            "project": project,
        }
    )


@routes.get("/v1/whoami")
async def whoami_v1(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response(
        {
            "api_key_id": who.key_id,
            "organization_id": who.org_id,
            "organization_name": who.org_name,
            "project_id": who.org_id,
            "project_name": who.org_name,
            "project_slug": _slug(who.org_name),
        }
    )
