"""Making and revoking share links from a fine-tune's page (publish or admin scope)."""

from __future__ import annotations

from aiohttp import web

from tunevault.errors import InvalidRequest, NotFound
from tunevault.models import Scope
from tunevault.server.console.state import PREFIX
from tunevault.server.context import blocking, principal, services
from tunevault.server.query import FT_ID, parse_step
from tunevault.server.shares import SHARE_SECRET
from tunevault.service import shares

routes = web.RouteTableDef()
MAX_HOURS = shares.MAX_SECONDS // 3600


@routes.post(PREFIX + "/fine-tunes/{ft_id}/shares")
async def create(request: web.Request) -> web.Response:
    who = principal(request, Scope.PUBLISH)
    ft_id = request.match_info["ft_id"]
    if not FT_ID.fullmatch(ft_id):
        raise NotFound("no such fine-tune")
    form = await request.post()
    ckpt_id = parse_step(str(form.get("checkpoint_id", "")), "checkpoint_id")
    hours = parse_step(str(form.get("hours", "24")), "hours")
    if not 1 <= hours <= MAX_HOURS:
        raise InvalidRequest(f"a share link lives 1 to {MAX_HOURS} hours", param="hours")
    await blocking(
        shares.create,
        services(request),
        request.app[SHARE_SECRET],
        who,
        ckpt_id,
        hours * 3600,
        ft_id=ft_id,
    )
    raise web.HTTPSeeOther(f"{PREFIX}/fine-tunes/{ft_id}#shares")


@routes.post(PREFIX + "/shares/{share_id}/revoke")
async def revoke(request: web.Request) -> web.Response:
    who = principal(request, Scope.PUBLISH)
    link = await blocking(
        shares.revoke, services(request), who, request.match_info["share_id"][:32]
    )
    if link is None:
        raise NotFound("no such share link in your organization")
    raise web.HTTPSeeOther(f"{PREFIX}/fine-tunes/{link.ft_id}#shares")
