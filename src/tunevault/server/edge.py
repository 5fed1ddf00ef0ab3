"""The HTTP edge: what aiohttp answers before our middlewares run, answered our way.

aiohttp's parser refuses over-long request lines and headers, too many headers, NUL in a
header or a bad Content-Length itself, with a text/plain 400 logged as an error with its
traceback. `EnvelopeRunner` serves the app through a protocol whose `handle_error` answers
those in Together's envelope instead, logged as one info line: a malformed request is the
client's fault, not the server's. `body_limit_middleware` refuses a declared body larger
than the route accepts before a byte of it is read. `database_outage_middleware` answers
503 `database_unavailable` with Retry-After when the database cannot be reached, on every
route (a download was a 500).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from tunevault.errors import PayloadTooLarge
from tunevault.server.uploads import MAX_BLOB
from tunevault.service.readiness import database_unavailable, is_database_outage

log = logging.getLogger("tunevault.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_HEADERS = 100  # aiohttp's default is 128
FIRST_REQUEST_WAIT_S = 1.0  # at a stop, for requests already sent on fresh connections
FIRST_REQUEST_POLL_S = 0.01
STREAMED_BODIES = frozenset({"/v1/publish/blobs/{sha256}", "/v1/v1/publish/blobs/{sha256}"})


def parser_error(exc: HttpProcessingError) -> web.Response:
    """The envelope for a request aiohttp's parser refused."""
    if isinstance(exc, LineTooLong):
        status, code = 431, "headers_too_large"
        message = "a request line or header is too long (at most 8190 bytes each)"
    else:
        status, code = 400, "malformed_request"
        # aiohttp's message may quote the offending bytes: keep it short and printable.
        detail = str(exc.message).encode("ascii", "backslashreplace").decode()[:200]
        message = f"malformed HTTP request: {detail}"
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": code,
        }
    }
    resp = web.json_response(body, status=status)
    resp.force_close()  # the parser's state is unknown past the bad bytes
    return resp


class EnvelopeRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        log.info("refused a malformed request from %s: %s", request.remote, exc)
        return parser_error(exc)


class EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class EnvelopeRunner(web.AppRunner):
    """An AppRunner whose connections use `EnvelopeRequestHandler`, and whose stop lets a
    connection accepted just before it deliver its request: aiohttp closes every
    connection without a request in progress, and a client whose request was on the wire
    (a new connection to a process being restarted) would see a disconnect unanswered."""

    async def cleanup(self) -> None:
        for site in list(self.sites):
            await site.stop()  # no more accepts
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_REQUEST_WAIT_S
        while self.server is not None and loop.time() < deadline:
            if all(c._request_count for c in self.server.connections):
                break
            await asyncio.sleep(FIRST_REQUEST_POLL_S)
        await super().cleanup()

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return EnvelopeServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """413 at once for a Content-Length past the route's limit: without it a client that
    declares 10^12 bytes and sends none holds the connection while the body is awaited."""
    declared = request.content_length
    if declared is not None:
        resource = request.match_info.route.resource
        streamed = resource is not None and resource.canonical in STREAMED_BODIES
        limit = MAX_BLOB if streamed else request.client_max_size
        if declared > limit:
            raise PayloadTooLarge(
                f"the body is {declared} bytes; this route accepts at most {limit}"
            )
    return await handler(request)


@web.middleware
async def database_outage_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as e:
        if not is_database_outage(e):
            raise
        log.warning("database unavailable on %s %s: %s", request.method, request.path, e)
        raise database_unavailable(e) from e
