"""Signing in to the console with an API key, and signing out."""

from __future__ import annotations

import secrets

from aiohttp import web

from tunevault.server.clients import FAILURES, client_address
from tunevault.server.console.middleware import SIGN_IN, SIGN_OUT, cookie_token
from tunevault.server.console.state import COOKIE, PREFIX, SESSION, SIGN_IN_COOKIE
from tunevault.server.console.views import page
from tunevault.server.context import blocking, services
from tunevault.server.origin import public_origin
from tunevault.service import sessions

routes = web.RouteTableDef()


def _next(request: web.Request) -> str:
    """Where to go after signing in: a console page of ours, never another site."""
    target = request.query.get("next", "")
    local = target.startswith(PREFIX + "/") and not target.startswith("//")
    return target if local and "\\" not in target else f"{PREFIX}/"


def _set_cookie(request: web.Request, resp: web.StreamResponse, name: str, value: str) -> None:
    resp.set_cookie(
        name,
        value,
        path=PREFIX,
        httponly=True,
        samesite="Lax",  # sent on a top-level link into the console, never on a cross-site POST
        secure=public_origin(request).startswith("https:"),
        max_age=int(services(request).settings.console_session_hours * 3600),
    )


def _sign_in_form(request: web.Request, status: int = 200, error: str = "") -> web.Response:
    token = cookie_token(request, SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
    resp = page(
        request, "sign_in.html", status=status, form_csrf=token, error=error, next=_next(request)
    )
    _set_cookie(request, resp, SIGN_IN_COOKIE, token)
    return resp


@routes.get(PREFIX)
async def root(_request: web.Request) -> web.Response:
    raise web.HTTPFound(f"{PREFIX}/")


@routes.get(SIGN_IN)
async def sign_in_form(request: web.Request) -> web.Response:
    if request.get(SESSION) is not None:
        raise web.HTTPSeeOther(_next(request))
    return _sign_in_form(request)


@routes.post(SIGN_IN)
async def sign_in(request: web.Request) -> web.Response:
    # Wrong keys count against the client's address as on the API (server/clients.py): a
    # guesser is refused with 429 before its guesses reach the database.
    failures, client = request.app[FAILURES], client_address(request)
    failures.check(client)
    form = await request.post()
    key = str(form.get("api_key", "")).strip()
    svc = services(request)
    made = await blocking(sessions.sign_in, svc, key, svc.settings.console_session_hours)
    if made is None:
        failures.failed(client)
        return _sign_in_form(request, 401, "That key is not valid or was revoked.")
    if (old := cookie_token(request, COOKIE)) is not None:  # one browser, one session
        await blocking(sessions.sign_out, svc, old)
    session_id, _ = made
    resp = web.HTTPSeeOther(_next(request))
    _set_cookie(request, resp, COOKIE, session_id)
    resp.del_cookie(SIGN_IN_COOKIE, path=PREFIX)
    raise resp


@routes.post(SIGN_OUT)
async def sign_out(request: web.Request) -> web.Response:
    session_id = cookie_token(request, COOKIE)
    if session_id is not None:
        await blocking(sessions.sign_out, services(request), session_id)
    resp = web.HTTPSeeOther(SIGN_IN)
    resp.del_cookie(COOKIE, path=PREFIX)
    raise resp
