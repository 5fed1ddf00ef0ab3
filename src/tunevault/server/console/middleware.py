"""The console's middleware: session-cookie authentication, CSRF checks, HTML errors and
security headers, for paths under /console only.

The API's Bearer middleware skips /console (app.PUBLIC_PREFIXES) and this one skips the
rest: an API route never accepts a cookie, a console route never accepts a Bearer key.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from tunevault.errors import PermissionDenied, TunevaultError, Unauthenticated
from tunevault.server.console.state import COOKIE, PREFIX, SESSION, SIGN_IN_COOKIE
from tunevault.server.console.views import SECURITY_HEADERS, page
from tunevault.server.context import LIMITS, PRINCIPAL, blocking, services
from tunevault.server.origin import public_origin
from tunevault.service import sessions

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,100}")
SIGN_IN = f"{PREFIX}/sign-in"
SIGN_OUT = f"{PREFIX}/sign-out"


def cookie_token(request: web.Request, name: str) -> str | None:
    """A cookie that can be one of our random tokens, else None (garbage never reaches SQL)."""
    value = request.cookies.get(name, "")
    return value if _TOKEN.fullmatch(value) else None


def _check_origin(request: web.Request) -> None:
    """A state-changing request must come from our own pages: a browser names the page's
    origin (Origin) or says the request is cross-site (Sec-Fetch-Site)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != public_origin(request):
        raise PermissionDenied("cross-site form posts are refused; use the console's own pages")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise PermissionDenied("cross-site form posts are refused; use the console's own pages")


async def _check_csrf(request: web.Request) -> None:
    form = await request.post()
    sent = str(form.get("csrf", ""))
    if request.path == SIGN_OUT and request.get(SESSION) is None:
        return  # the session is over already: nothing left to protect
    if request.path == SIGN_IN:
        expected = cookie_token(request, SIGN_IN_COOKIE) or ""
    else:
        session = request.get(SESSION)
        expected = session.csrf_token if session else ""
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise PermissionDenied("the form's CSRF token is missing or stale; reload the page")


async def _authenticate(request: web.Request) -> None:
    session_id = cookie_token(request, COOKIE)
    if session_id is None:
        return
    session = await blocking(sessions.lookup, services(request), session_id)
    if session is not None:
        request[SESSION] = session
        request[PRINCIPAL] = session.principal
        request.app[LIMITS].charge(session.principal)


def _error_page(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    resp = page(request, "error.html", status=status, status_code=status, message=message)
    resp.headers.update(headers or {})  # Retry-After of a 429
    return resp


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        await _authenticate(request)
        if request.method == "POST":
            _check_origin(request)
            await _check_csrf(request)
        return await handler(request)
    except Unauthenticated:
        target = request.path_qs if request.method == "GET" else f"{PREFIX}/"
        raise web.HTTPSeeOther(f"{SIGN_IN}?next={quote(target, safe='')}") from None
    except TunevaultError as e:
        return _error_page(request, e.status, e.message, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error_page(request, e.status, e.reason)


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path != PREFIX and not request.path.startswith(PREFIX + "/"):
        return await handler(request)
    try:
        resp = await _guarded(request, handler)
    except web.HTTPException as e:  # redirects
        e.headers.update(SECURITY_HEADERS)
        raise
    if not resp.prepared:  # a download is already on its way: its own headers stand
        for name, value in SECURITY_HEADERS.items():
            resp.headers.setdefault(name, value)
    return resp
