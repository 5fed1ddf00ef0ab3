"""What every handler reaches through the app: settings, metadata store, blob storage."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from aiohttp import web

from tunevault.errors import InvalidRequest, PermissionDenied, Unauthenticated
from tunevault.models import Principal, Scope
from tunevault.server.limits import KeyLimits
from tunevault.service.accounts import KeyCache
from tunevault.service.context import Services

P = ParamSpec("P")
T = TypeVar("T")


SERVICES = web.AppKey("services", Services)
LIMITS = web.AppKey("limits", KeyLimits)
KEY_CACHE = web.AppKey("key_cache", KeyCache)
PRINCIPAL = "tunevault.principal"
# Valid JSON, yet no database stores it: NUL (PostgreSQL refuses it) and lone surrogates
# like "\ud800" (no UTF-8 encodes them); both were 500s further down.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def principal(request: web.Request, scope: Scope = Scope.READ) -> Principal:
    """The authenticated caller, checked for the scope the route needs."""
    who: Principal | None = request.get(PRINCIPAL)
    if who is None:
        raise Unauthenticated("missing API key: send Authorization: Bearer <key>")
    implied = Scope.ADMIN in who.scopes and scope is not Scope.OPERATOR
    if scope not in who.scopes and not implied:
        raise PermissionDenied(f"this API key lacks the {scope.value!r} scope")
    return who


async def blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a synchronous store or storage call off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def _unstorable(value: object) -> str | None:
    """The first NUL or surrogate in a key or string of a parsed JSON value, else None.
    A loop, not recursion: how deep a body may nest is the JSON parser's limit (Python
    3.12 counts C recursion apart), not the handler's remaining stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if found := _UNSTORABLE.search(item):
                return found.group()
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise InvalidRequest("the body must be a JSON object of UTF-8 text") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    found = _unstorable(body)
    if found == "\x00":
        raise InvalidRequest("strings in the body must not contain NUL characters")
    if found is not None:
        raise InvalidRequest("the body must be a JSON object of UTF-8 text")
    return body
