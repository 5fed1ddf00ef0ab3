"""What every handler reaches through the app: settings, metadata store, blob storage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from aiohttp import web

from tunevault.errors import PermissionDenied, Unauthenticated
from tunevault.models import Principal, Scope
from tunevault.server.limits import KeyLimits
from tunevault.services import Services

P = ParamSpec("P")
T = TypeVar("T")


SERVICES = web.AppKey("services", Services)
LIMITS = web.AppKey("limits", KeyLimits)
PRINCIPAL = "tunevault.principal"


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def principal(request: web.Request, scope: Scope = Scope.READ) -> Principal:
    """The authenticated caller, checked for the scope the route needs."""
    who: Principal | None = request.get(PRINCIPAL)
    if who is None:
        raise Unauthenticated("missing API key: send Authorization: Bearer <key>")
    if scope not in who.scopes and Scope.ADMIN not in who.scopes:
        raise PermissionDenied(f"this API key lacks the {scope.value!r} scope")
    return who


async def blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a synchronous store or storage call off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)
