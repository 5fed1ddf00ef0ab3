"""What operators see: request ids, JSON logs, Prometheus metrics.

Every request gets an id (the client's `X-Request-Id` if it is sane, else a new one),
echoed in the response and attached to every log line written while it is handled. The
Authorization header and the request body never reach a log line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tunevault.server.clients import client_address

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tunevault_requests",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tunevault_request_seconds",
            "Time to the response headers (downloads: to the last byte)",
            ["route"],
            registry=r,
        )
        self.errors = Counter("tunevault_errors", "Error answers by code", ["code"], registry=r)
        self.bytes_served = Counter(
            "tunevault_bytes_served", "Archive bytes sent by this process", ["mode"], registry=r
        )
        self.downloads_in_flight = Gauge(
            "tunevault_downloads_in_flight", "Downloads being sent now", registry=r
        )
        self.builds = Histogram(
            "tunevault_build_seconds",
            "Build job durations",
            ["kind", "outcome"],
            registry=r,
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
        )
        self.queue_depth = Gauge(
            "tunevault_build_queue_depth", "Build jobs queued or running", ["state"], registry=r
        )


METRICS = web.AppKey("metrics", Metrics)


def route_name(request: web.BaseRequest) -> str:
    """The route template, not the raw path: ids must not explode metric cardinality."""
    # Requests the HTTP parser refused never reached routing: they have no match_info.
    if not isinstance(request, web.Request) or request._match_info is None:
        return "unmatched"
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    rid = given if _SANE_ID.match(given) else uuid.uuid4().hex
    REQUEST_ID.set(rid)
    request["request_id"] = rid
    started, status = time.monotonic(), 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as e:  # 304 and friends leave as exceptions
        status = e.status
        raise
    finally:
        # Counted here, not in the access log, so metrics do not depend on the log level.
        metrics = request.app[METRICS]
        route = route_name(request)
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.latency.labels(route).observe(time.monotonic() - started)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: also reaches streamed downloads, whose headers leave early."""
    response.headers["X-Request-Id"] = request.get("request_id", "-")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the request being handled."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        JsonFormatter.converter = time.gmtime
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, route, status, bytes, time, request id, key id."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        who = request.get("tunevault.principal")
        route = route_name(request)
        self.logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status,
            extra={
                "request_id": request.get("request_id"),
                "fields": {
                    "method": request.method,
                    "path": request.path,
                    "route": route,
                    "status": response.status,
                    "bytes": response.body_length,
                    "seconds": round(time, 6),
                    "key_id": who.key_id if who else None,
                    "remote": client_address(request),
                },
            },
        )
