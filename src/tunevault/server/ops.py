"""Operations routes: liveness, readiness, Prometheus metrics, the download audit."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tunevault.errors import InvalidRequest, TunevaultError
from tunevault.models import Scope
from tunevault.server.context import blocking, principal, services
from tunevault.server.observability import METRICS
from tunevault.server.query import parse_step
from tunevault.server.render import iso
from tunevault.service import operations
from tunevault.service.readiness import RETRY_AFTER_S, check_database, check_storage

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers a query and the storage takes a probe write; a
    failure answers 503 with the code of the first failing part (database first: without
    it nothing works) and every part's state in `checks`."""
    svc = services(request)
    checks: dict[str, str] = {}
    failed: list[TunevaultError] = []
    for name, probe in (("database", check_database), ("storage", check_storage)):
        try:
            await blocking(probe, svc)
            checks[name] = "ok"
        except TunevaultError as e:  # say which part, and its kind of failure, not details
            checks[name] = f"unavailable ({e.code})"
            failed.append(e)
    if failed:
        err = failed[0]
        err.headers["Retry-After"] = str(RETRY_AFTER_S)
        return web.json_response(
            {**err.envelope(), "checks": checks}, status=err.status, headers=err.headers
        )
    return web.json_response({"status": "ready", "checks": checks})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    principal(request, Scope.OPERATOR)  # process-wide: not for one organization's admin
    m = request.app[METRICS]
    for state, depth in (await blocking(operations.queue_depth, services(request))).items():
        m.queue_depth.labels(state.value).set(depth)
    return web.Response(
        body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@routes.get("/v1/admin/audit/downloads")
async def audit_downloads(request: web.Request) -> web.Response:
    """The organization's downloads, newest first (admin scope)."""
    who = principal(request, Scope.ADMIN)
    limit = parse_step(request.query.get("limit", "100"), "limit")
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be from 1 to 1000", param="limit")
    before = request.query.get("before_id")
    rows = await blocking(
        operations.list_downloads,
        services(request),
        who.org_id,
        limit=limit,
        before_id=parse_step(before, "before_id") if before else None,
    )
    return web.json_response(
        {"data": [{**asdict(r), "created_at": iso(r.created_at)} for r in rows]}
    )
