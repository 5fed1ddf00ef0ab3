"""Errors on the Hub routes, in the headers `huggingface_hub` maps to its exceptions.

`hf_raise_for_status` reads `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound)
and `X-Error-Message`; a 401 whose message is exactly INVALID_CREDENTIALS stays an
authentication error instead of reading as "repository not found". The body is still
Together's envelope, like every other error of the server.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from tunevault.errors import (
    EntryNotFound,
    RepositoryNotFound,
    RevisionNotFound,
    TunevaultError,
    Unauthenticated,
)
from tunevault.server import hub, hub_files

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
HUB_CODES: dict[type[TunevaultError], str] = {
    RepositoryNotFound: "RepoNotFound",
    RevisionNotFound: "RevisionNotFound",
    EntryNotFound: "EntryNotFound",
}
_HUB_HANDLERS = frozenset(
    route.handler
    for table in (hub.routes, hub_files.routes)
    for route in table
    if isinstance(route, web.RouteDef)
)
_UNSENDABLE = re.compile(r"[^\x20-\x7e]")


def hub_headers(error: TunevaultError, request: web.Request) -> dict[str, str]:
    message = error.message
    if isinstance(error, Unauthenticated) and request.headers.get("Authorization"):
        message = INVALID_CREDENTIALS
    headers = {"X-Error-Message": _UNSENDABLE.sub("?", message)[:1000]}
    if code := HUB_CODES.get(type(error)):
        headers["X-Error-Code"] = code
    return headers


@web.middleware
async def hub_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Between the error and auth middlewares: it sees auth's 401s too."""
    try:
        return await handler(request)
    except TunevaultError as e:
        if request.match_info.handler in _HUB_HANDLERS:
            e.headers.update(hub_headers(e, request))
        raise
