"""The `/v1/fine-tunes` routes the official clients call."""

from __future__ import annotations

from aiohttp import web

from tunevault.models import FineTune, Scope
from tunevault.server import render
from tunevault.server.context import blocking, principal, services
from tunevault.server.query import FT_ID, parse_step
from tunevault.service import finetunes

routes = web.RouteTableDef()


async def owned_fine_tune(request: web.Request, scope: Scope = Scope.READ) -> FineTune:
    """The fine-tune in the path, if the caller's organization owns it; else 404."""
    who = principal(request, scope)
    ft_id = request.match_info["ft_id"]
    found = ft_id if FT_ID.fullmatch(ft_id) else None
    return await blocking(finetunes.owned_fine_tune, services(request), who.org_id, found)


@routes.get("/v1/fine-tunes")
async def list_fine_tunes(request: web.Request) -> web.Response:
    who = principal(request)
    fts = await blocking(finetunes.list_fine_tunes, services(request), who.org_id)
    return web.json_response({"object": "list", "data": [render.fine_tune(ft) for ft in fts]})


@routes.get("/v1/fine-tunes/{ft_id}")
async def get_fine_tune(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request)
    events = await blocking(finetunes.events, services(request), ft)
    return web.json_response(render.fine_tune(ft, events))


@routes.get("/v1/fine-tunes/{ft_id}/events")
async def list_events(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request)
    events = await blocking(finetunes.events, services(request), ft)
    return web.json_response({"object": "list", "data": [render.event(e) for e in events]})


@routes.get("/v1/fine-tunes/{ft_id}/checkpoints")
async def list_checkpoints(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request)
    ckpts = await blocking(finetunes.checkpoints, services(request), ft)
    return web.json_response({"object": "list", "data": [render.checkpoint(c) for c in ckpts]})


@routes.get("/v1/fine-tunes/{ft_id}/metrics")
async def list_metrics(request: web.Request) -> web.Response:
    lo, hi = (
        parse_step(request.query[name], name) if name in request.query else None
        for name in ("global_step_from", "global_step_to")
    )
    ft = await owned_fine_tune(request)
    rows = await blocking(finetunes.metrics, services(request), ft, lo, hi)
    return web.json_response({"metrics": [render.metric(m) for m in rows]})


@routes.delete("/v1/fine-tunes/{ft_id}")
async def delete_fine_tune(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request, Scope.PUBLISH)
    await blocking(finetunes.delete, services(request), ft)
    return web.json_response({"message": f"fine-tune {ft.id} deleted", "id": ft.id})


@routes.post("/v1/fine-tunes/{ft_id}/cancel")
async def cancel_fine_tune(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request, Scope.PUBLISH)
    ft = await blocking(finetunes.cancel, services(request), ft)
    return web.json_response(render.fine_tune(ft))
