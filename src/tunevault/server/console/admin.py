"""Admin pages (admin scope): the organization's keys and its audit trail."""

from __future__ import annotations

from aiohttp import web

from tunevault.errors import InvalidRequest, NotFound
from tunevault.models import Scope
from tunevault.server.console.state import PREFIX
from tunevault.server.console.views import page
from tunevault.server.context import blocking, principal, services
from tunevault.service import console, shares

routes = web.RouteTableDef()
KEYS = f"{PREFIX}/admin/keys"
# What an organization's admin may grant: never a scope beyond the organization's own.
GRANTABLE = (Scope.READ, Scope.PUBLISH, Scope.ADMIN)


async def _keys_page(request: web.Request, status: int = 200, **shown: object) -> web.Response:
    who = principal(request, Scope.ADMIN)
    keys = await blocking(console.list_keys, services(request), who.org_id)
    return page(request, "keys.html", status=status, keys=keys, scopes=GRANTABLE, **shown)


@routes.get(KEYS)
async def keys(request: web.Request) -> web.Response:
    return await _keys_page(request, new_token=None)


@routes.post(KEYS)
async def create_key(request: web.Request) -> web.Response:
    """The new key's token is in this answer only: it is stored hashed."""
    who = principal(request, Scope.ADMIN)
    form = await request.post()
    name = str(form.get("name", "")).strip()
    if not 1 <= len(name) <= 200 or not name.isprintable():
        raise InvalidRequest("a key's name is 1 to 200 printable characters", param="name")
    sent = {str(v) for v in form.getall("scope", [])}
    scopes = {s for s in GRANTABLE if s.value in sent}
    if len(scopes) != len(sent):
        raise InvalidRequest("scope must be read, publish or admin", param="scope")
    if not scopes:
        raise InvalidRequest("pick at least one scope", param="scope")
    key, token = await blocking(console.create_key, services(request), who.org_id, name, scopes)
    return await _keys_page(request, status=201, new_token=token, new_key=key)


@routes.post(KEYS + "/{key_id}/revoke")
async def revoke_key(request: web.Request) -> web.Response:
    who = principal(request, Scope.ADMIN)
    key_id = request.match_info["key_id"][:64]
    if not await blocking(console.revoke_key, services(request), who.org_id, key_id):
        raise NotFound(f"no active key {key_id!r} in your organization")
    raise web.HTTPSeeOther(KEYS)


@routes.get(f"{PREFIX}/admin/audit")
async def audit(request: web.Request) -> web.Response:
    """Downloads (archive, console button, share link) and share links, newest first."""
    who = principal(request, Scope.ADMIN)
    svc = services(request)
    downloads = await blocking(console.list_downloads, svc, who.org_id)
    links = await blocking(shares.list_links, svc, who.org_id)
    return page(request, "audit.html", downloads=downloads, links=links)
