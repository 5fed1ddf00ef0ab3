"""The `/v1/fine-tunes` routes the official clients call."""

from __future__ import annotations

from aiohttp import web

from tunevault.errors import Conflict, FineTuneNotFound
from tunevault.models import FineTune, Kind, Scope
from tunevault.server import render
from tunevault.server.context import blocking, principal, services
from tunevault.server.query import FT_ID, parse_step

routes = web.RouteTableDef()
_CANCELLABLE = {"pending", "queued", "running", "compressing", "uploading"}


async def owned_fine_tune(request: web.Request, scope: Scope = Scope.READ) -> FineTune:
    """The fine-tune in the path, if the caller's organization owns it; else 404."""
    who = principal(request, scope)
    ft_id = request.match_info["ft_id"]
    ft = None
    if FT_ID.fullmatch(ft_id):
        ft = await blocking(services(request).store.get_fine_tune, who.org_id, ft_id)
    if ft is None:
        raise FineTuneNotFound(
            f"fine-tune {ft_id[:80]!r} not found; GET /v1/fine-tunes lists yours", param="id"
        )
    return ft


@routes.get("/v1/fine-tunes")
async def list_fine_tunes(request: web.Request) -> web.Response:
    who = principal(request)
    fts = await blocking(services(request).store.list_fine_tunes, who.org_id)
    return web.json_response({"object": "list", "data": [render.fine_tune(ft) for ft in fts]})


@routes.get("/v1/fine-tunes/{ft_id}")
async def get_fine_tune(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request)
    events = await blocking(services(request).store.list_events, ft.id)
    return web.json_response(render.fine_tune(ft, events))


@routes.get("/v1/fine-tunes/{ft_id}/events")
async def list_events(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request)
    events = await blocking(services(request).store.list_events, ft.id)
    return web.json_response({"object": "list", "data": [render.event(e) for e in events]})


@routes.get("/v1/fine-tunes/{ft_id}/checkpoints")
async def list_checkpoints(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request)
    ckpts = await blocking(services(request).store.list_checkpoints, ft.id)
    # Merges of intermediate adapters (built on demand, see merged_step) are not published.
    ckpts = [c for c in ckpts if c.final or c.kind != Kind.MERGED]
    # Newest first; at one step finals first, the merged model (the default) leading.
    ckpts.sort(key=lambda c: (-c.step, not c.final, c.kind != Kind.MERGED, c.kind.value))
    return web.json_response({"object": "list", "data": [render.checkpoint(c) for c in ckpts]})


@routes.get("/v1/fine-tunes/{ft_id}/metrics")
async def list_metrics(request: web.Request) -> web.Response:
    lo, hi = (
        parse_step(request.query[name], name) if name in request.query else None
        for name in ("global_step_from", "global_step_to")
    )
    ft = await owned_fine_tune(request)
    # The store has no step bounds: filter here.
    rows = await blocking(services(request).store.list_metrics, ft.id)
    rows = [m for m in rows if (lo is None or m.step >= lo) and (hi is None or m.step <= hi)]
    return web.json_response({"metrics": [render.metric(m) for m in rows]})


@routes.delete("/v1/fine-tunes/{ft_id}")
async def delete_fine_tune(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request, Scope.PUBLISH)
    await blocking(services(request).store.delete_fine_tune, ft.org_id, ft.id)
    return web.json_response({"message": f"fine-tune {ft.id} deleted", "id": ft.id})


@routes.post("/v1/fine-tunes/{ft_id}/cancel")
async def cancel_fine_tune(request: web.Request) -> web.Response:
    ft = await owned_fine_tune(request, Scope.PUBLISH)
    store = services(request).store
    if ft.status in _CANCELLABLE:
        await blocking(store.add_event, ft.id, "CANCEL_REQUESTED", "cancel requested via API")
        updated = await blocking(store.set_status, ft.org_id, ft.id, "cancel_requested")
        ft = updated or ft
    elif ft.status not in ("cancel_requested", "cancelled"):
        raise Conflict(f"fine-tune {ft.id} is {ft.status}; only a running job can be cancelled")
    return web.json_response(render.fine_tune(ft))
