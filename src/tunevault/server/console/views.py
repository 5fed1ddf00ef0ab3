"""Rendering console pages: Jinja2 templates with autoescaping on, and the headers every
page carries (a Content-Security-Policy that allows no inline script or style)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jinja2
from aiohttp import web

from tunevault.client.progress import human
from tunevault.server.console.state import SESSION, Session

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Share links and ids never leave in a Referer; "no-referrer" would make browsers send
    # "Origin: null" on our own form posts, which the CSRF check refuses.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(ts: datetime | None) -> str:
    return "" if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S UTC")


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("tunevault.server.console", "templates"),
    autoescape=True,  # every template is HTML: escape every value, always
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["size"] = human
_ENV.filters["when"] = _when


def page(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    session: Session | None = request.get(SESSION)
    html = _ENV.get_template(template).render(
        session=session,
        who=session.principal if session else None,
        csrf=session.csrf_token if session else "",
        path=request.path,
        **context,
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
