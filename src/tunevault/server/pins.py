"""`PUT|DELETE /v1/admin/pins/{ft_id}[?step=N]`: pin a step of one of the organization's
fine-tunes (default: its final step), so the derived budget never evicts its archives."""

from __future__ import annotations

from aiohttp import web

from tunevault.errors import InvalidRequest
from tunevault.models import Scope
from tunevault.server.context import blocking, principal, services
from tunevault.service.cache import set_pin

routes = web.RouteTableDef()


def _step(request: web.Request) -> int | None:
    raw = request.rel_url.query.get("step")
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidRequest(f"step must be a whole number, not {raw!r}", param="step")
    return int(raw)


async def _set(request: web.Request, pinned: bool) -> web.Response:
    who = principal(request, Scope.ADMIN)
    ft_id = request.match_info["ft_id"]
    pin = await blocking(set_pin, services(request), ft_id, _step(request), pinned, who.org_id)
    return web.json_response(pin.as_json())


@routes.put("/v1/admin/pins/{ft_id}")
async def pin(request: web.Request) -> web.Response:
    return await _set(request, True)


@routes.delete("/v1/admin/pins/{ft_id}")
async def unpin(request: web.Request) -> web.Response:
    return await _set(request, False)
