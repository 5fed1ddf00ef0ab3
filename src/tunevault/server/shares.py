"""Share links over the API: made and revoked with a publish (or admin) key, downloaded by
anyone who holds one, with no key (docs/console.md)."""

from __future__ import annotations

from aiohttp import web

from tunevault.errors import InvalidRequest, ShareLinkNotFound
from tunevault.models import Principal, Scope, ShareLink
from tunevault.server.context import blocking, json_body, principal, services
from tunevault.server.download import serve_archive
from tunevault.server.origin import public_origin
from tunevault.server.query import parse_download_query
from tunevault.server.render import iso
from tunevault.service import shares
from tunevault.service.downloads import resolve
from tunevault.settings import Settings

routes = web.RouteTableDef()
public_routes = web.RouteTableDef()  # not under /v1: no alias, no key
SHARE_SECRET = web.AppKey("share_secret", bytes)
PUBLIC_PREFIX = "/shared/"


def install(app: web.Application, settings: Settings) -> None:
    """Load the share secret once, at start: every link is signed and checked with it."""
    app[SHARE_SECRET] = shares.load_secret(settings)


def _render(request: web.Request, link: ShareLink) -> dict[str, object]:
    token = shares.token(request.app[SHARE_SECRET], link)
    return {
        "object": "share-link",
        "id": link.id,
        "url": f"{public_origin(request)}{PUBLIC_PREFIX}{token}",
        "ft_id": link.ft_id,
        "step": link.step,
        "checkpoint": link.kind.value,
        "created_at": iso(link.created_at),
        "expires_at": iso(link.expires_at),
        "revoked_at": iso(link.revoked_at) if link.revoked_at else None,
    }


@routes.post("/v1/shares")
async def create_share(request: web.Request) -> web.Response:
    who = principal(request, Scope.PUBLISH)
    body = await json_body(request)
    seconds = body.get("expires_in", 24 * 3600)
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise InvalidRequest("expires_in must be a number of seconds", param="expires_in")
    if not 60 <= seconds <= shares.MAX_SECONDS:
        raise InvalidRequest(
            f"expires_in must be from 60 to {shares.MAX_SECONDS} seconds (30 days)",
            param="expires_in",
        )
    params = {k: [str(v)] for k, v in body.items() if k in ("ft_id", "checkpoint_step")}
    params["checkpoint"] = [str(body.get("checkpoint", "default"))]
    q = parse_download_query(params)
    svc = services(request)
    found = await blocking(resolve, svc, who.org_id, q)
    link, _ = await blocking(
        shares.create, svc, request.app[SHARE_SECRET], who, found.ckpt.id, seconds
    )
    return web.json_response(_render(request, link), status=201)


@routes.delete("/v1/shares/{share_id}")
async def revoke_share(request: web.Request) -> web.Response:
    who = principal(request, Scope.PUBLISH)
    link_id = request.match_info["share_id"][:32]
    link = await blocking(shares.revoke, services(request), who, link_id)
    if link is None:
        raise ShareLinkNotFound(f"no share link {link_id!r} in your organization")
    return web.json_response(_render(request, link))


@public_routes.get(PUBLIC_PREFIX + "{token}")
async def download_shared(request: web.Request) -> web.StreamResponse:
    """No key: the signed token is the credential. Audited as key `share:<id>`."""
    svc = services(request)
    secret = request.app[SHARE_SECRET]
    link, found = await blocking(shares.open_link, svc, secret, request.match_info["token"][:200])
    who = Principal(
        key_id=link.audit_key,
        key_name="share link",
        org_id=link.org_id,
        org_name="",
        scopes=frozenset({Scope.READ}),
    )
    return await serve_archive(request, who, found)
