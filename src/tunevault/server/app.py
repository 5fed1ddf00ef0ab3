"""The aiohttp application: middlewares (request id, errors, auth and limits), routes, and
the aliases some clients need."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources

import yaml
from aiohttp import web

from tunevault.errors import NotFound, TunevaultError, Unauthenticated
from tunevault.server import (
    console,
    download,
    finetunes,
    hub,
    hub_files,
    ops,
    pins,
    publish,
    shares,
    uploads,
    usage,
    whoami,
)
from tunevault.server.audit import AUDIT, audit_ctx
from tunevault.server.clients import (
    FAILURES,
    TRUSTED,
    FailureLimits,
    client_address,
    client_middleware,
)
from tunevault.server.context import KEY_CACHE, LIMITS, PRINCIPAL, SERVICES, blocking
from tunevault.server.edge import (
    MAX_HEADERS,
    body_limit_middleware,
    database_outage_middleware,
)
from tunevault.server.hub_errors import hub_error_middleware
from tunevault.server.inflight import INFLIGHT, InFlight
from tunevault.server.limits import KeyLimits
from tunevault.server.observability import (
    METRICS,
    Metrics,
    echo_request_id,
    request_id_middleware,
)
from tunevault.server.resolving import RESOLUTIONS
from tunevault.server.smallblobs import SMALL_BLOBS, SmallBlobs
from tunevault.service.accounts import KeyCache, authenticate
from tunevault.service.audit import AuditWriter
from tunevault.service.context import Services
from tunevault.service.recent import Recent

log = logging.getLogger("tunevault.server")
# Not Bearer: the console signs in with a session cookie (its own middleware), a share
# link's signed token is its credential.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", console.PREFIX})
PUBLIC_PREFIXES = (console.PREFIX + "/", shares.PUBLIC_PREFIX)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_HTTP_CODES = {
    400: "invalid_request",
    405: "method_not_allowed",
    412: "precondition_failed",
    413: "payload_too_large",
    431: "headers_too_large",
}


def _envelope(
    status: int,
    message: str,
    code: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves in Together's envelope with a string code; nothing else does."""
    try:
        return await handler(request)
    except TunevaultError as e:
        request.app[METRICS].errors.labels(e.code).inc()
        resp = web.json_response(e.envelope(), status=e.status, headers=e.headers)
        if e.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="tunevault"'
        return resp
    except web.HTTPException as e:
        if e.status < 400:
            raise
        if e.status == 404:
            err = NotFound(f"no route {request.method} {request.path[:200]}")
            return web.json_response(err.envelope(), status=404)
        headers = {k: v for k, v in e.headers.items() if k in ("Allow", "ETag")}
        code = _HTTP_CODES.get(e.status, "http_error")
        return _envelope(e.status, e.reason, code, headers)
    except (ConnectionResetError, BrokenPipeError):
        # The client went away mid-request (a cut upload keeps what arrived; a cut download's
        # sendfile raises either): not a server error. 499 as nginx logs it; nobody receives
        # this answer. Not all of ConnectionError: ConnectionRefusedError is us failing to
        # reach a backend, a 500.
        log.info("client closed the connection during %s %s", request.method, request.path)
        return _envelope(499, "the client closed the connection", "client_closed_request")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _envelope(500, "internal error; the server log has details", "internal_error")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    failures, client = request.app[FAILURES], client_address(request)
    failures.check(client)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        failures.failed(client)
        raise Unauthenticated("missing API key: send Authorization: Bearer <key>")
    token = token.strip()
    cache = request.app[KEY_CACHE]
    who, ageing = cache.get(token)
    lookup = functools.partial(blocking, authenticate, request.app[SERVICES], token)
    if ageing:  # looked up again before it lapses
        request.app[INFLIGHT].refresh(
            ("key", token),
            lookup,
            lambda found: cache.put(token, found) if found else cache.drop(token),
            lambda: cache.drop(token),
        )
    if who is None:  # a miss costs a thread hop and a query (shared by concurrent misses)
        who = await request.app[INFLIGHT].run(("key", token), lookup)
        if who is None:
            failures.failed(client)
            raise Unauthenticated("invalid or revoked API key")
        cache.put(token, who)
    request[PRINCIPAL] = who
    request.app[LIMITS].charge(who)
    return await handler(request)


def openapi_document() -> dict[str, object]:
    text = (resources.files("tunevault") / "openapi.yaml").read_text()
    doc: dict[str, object] = yaml.safe_load(text)
    return doc


def _install_state(app: web.Application, svc: Services) -> None:
    """What the routes share: the audit queue, the caches and the limits of this process."""
    app[AUDIT] = writer = AuditWriter(svc.store)
    app[METRICS].watch_audit(writer)
    app.cleanup_ctx.append(audit_ctx)
    app[KEY_CACHE] = KeyCache(svc.settings.auth_cache_seconds)
    app[RESOLUTIONS] = Recent(svc.settings.resolve_cache_seconds)
    app[INFLIGHT] = InFlight()
    app[SMALL_BLOBS] = SmallBlobs(svc.settings.memory_cache_bytes)
    app[TRUSTED] = tuple(svc.settings.trusted_proxies)
    app[FAILURES] = FailureLimits(svc.settings.auth_failures_per_minute)
    app[LIMITS] = KeyLimits(svc.settings.rate_limit_per_minute, svc.settings.max_downloads_per_key)
    shares.install(app, svc.settings)


def make_app(svc: Services, metrics: Metrics | None = None) -> web.Application:
    app = web.Application(
        middlewares=[
            request_id_middleware,
            client_middleware,
            error_middleware,
            hub_error_middleware,
            body_limit_middleware,
            database_outage_middleware,
            console.console_middleware,
            auth_middleware,
        ],
        client_max_size=32 << 20,
        # Uploads are written and hashed off the loop 1 MiB at a time (uploads.BUFFER): a
        # 4 MiB read buffer (aiohttp's default is 64 KiB) holds what arrives meanwhile.
        handler_args={"read_bufsize": 4 << 20, "max_headers": MAX_HEADERS},
    )
    app[SERVICES] = svc
    app[METRICS] = metrics or Metrics()
    if svc is not None:  # None only when a test inspects the routing table
        _install_state(app, svc)
    app.on_response_prepare.append(echo_request_id)
    spec = json.dumps(openapi_document())

    async def openapi_json(_request: web.Request) -> web.Response:
        return web.Response(text=spec, content_type="application/json")

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_routes(ops.routes)
    app.router.add_routes(usage.routes)
    app.router.add_routes(pins.routes)
    console.add_routes(app)  # HTML, not in openapi.yaml (docs/console.md lists them)
    app.router.add_routes(shares.public_routes)
    for table in (
        download.routes,
        finetunes.routes,
        whoami.routes,
        publish.routes,
        uploads.routes,
        shares.routes,
    ):
        app.router.add_routes(table)
        # Clients configured with a base URL that already ends in /v1 call /v1/v1/... and
        # /v1/v3/whoami (COMPAT.md): serve the same handlers there.
        for route in table:
            assert isinstance(route, web.RouteDef)
            app.router.add_route(route.method, "/v1" + route.path, route.handler)
    # The Hub protocol at the root, as huggingface_hub calls it (no /v1 aliases); last, so
    # that its `/{repo_id}/resolve/...` pattern never shadows a route of our own.
    app.router.add_routes(hub.routes)
    app.router.add_routes(hub_files.routes)
    return app
