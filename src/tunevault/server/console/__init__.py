"""The web console at /console: server-rendered pages over the same store, signed in with
an API key turned into a session cookie (docs/console.md)."""

from __future__ import annotations

from aiohttp import web

from tunevault.server.console import admin, auth, pages, sharing
from tunevault.server.console.middleware import console_middleware
from tunevault.server.console.state import PREFIX

__all__ = ["PREFIX", "add_routes", "console_middleware"]


def add_routes(app: web.Application) -> None:
    for table in (auth.routes, pages.routes, admin.routes, sharing.routes):
        app.router.add_routes(table)
