"""What operators see: request ids, JSON logs, Prometheus metrics.

Every request gets an id (the client's `X-Request-Id` if it is sane, else a new one),
echoed in the response and attached to every log line written while it is handled. The
Authorization header and the request body never reach a log line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from tunevault.server.clients import client_address
from tunevault.service.audit import AuditWriter
from tunevault.service.context import Services
from tunevault.service.instrument import instrumented

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
        # Labelled children by label values: `labels()` takes a lock and builds the key
        # each call, a cost per request paid here once per combination.
        self._children: dict[tuple[object, ...], Any] = {}
        self._operations(r)

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def count_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._child(self.requests, route, method, str(status)).inc()
        self._child(self.latency, route).observe(seconds)

    def _operations(self, r: CollectorRegistry) -> None:
        """What a platform team watches beside the requests (docs/operations.md)."""
        ProcessCollector(registry=r)  # memory, CPU seconds, open fds, start time
        self.upload_bytes = Counter(
            "tunevault_upload_bytes", "Blob upload bytes received by this process", registry=r
        )
        self.storage_seconds = Histogram(
            "tunevault_storage_seconds",
            "Storage calls, timed at the storage interface (reads: to the first byte)",
            ["backend", "operation"],
            registry=r,
            buckets=_FAST_BUCKETS,
        )
        self.database_seconds = Histogram(
            "tunevault_database_seconds",
            "SQL statements, by their first word",
            ["statement"],
            registry=r,
            buckets=_FAST_BUCKETS,
        )
        self.lease_takeovers = Counter(
            "tunevault_lease_takeovers",
            "Build jobs taken over from a worker whose lease expired",
            registry=r,
        )
        self.audit_queue = Gauge(
            "tunevault_audit_queue_depth", "Download records waiting to be written", registry=r
        )
        self._registry = r

    def watch_audit(self, writer: AuditWriter) -> None:
        """Read the audit writer's queue depth and drop count at every scrape."""
        self.audit_queue.set_function(lambda: writer.queue.qsize())
        self._registry.register(
            _CountCollector("tunevault_audit_dropped", DROPPED_HELP, lambda: writer.dropped)
        )

    def instrument(self, svc: Services) -> Services:
        """The services with storage and database calls timed into these metrics."""
        return instrumented(svc, self.observe_storage, self.observe_database)

    def observe_storage(self, backend: str, operation: str, seconds: float) -> None:
        self._child(self.storage_seconds, backend, operation).observe(seconds)

    def observe_build(self, kind: str, outcome: str, seconds: float) -> None:
        self.builds.labels(kind, outcome).observe(seconds)

    def observe_database(self, statement: str, seconds: float) -> None:
        self._child(self.database_seconds, statement).observe(seconds)


_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
DROPPED_HELP = "Download records dropped because the audit queue was full"


class _CountCollector(Collector):
    """A counter whose count another object keeps (read at scrape time)."""

    def __init__(self, name: str, documentation: str, count: Callable[[], int]) -> None:
        self.name, self.documentation, self.count = name, documentation, count

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.count())


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
    rid = given if _SANE_ID.match(given) else os.urandom(16).hex()  # uuid4's bits, less work
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
        elapsed = time.monotonic() - started
        request.app[METRICS].count_request(route_name(request), request.method, status, elapsed)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: also reaches streamed downloads, whose headers leave early."""
    response.headers["X-Request-Id"] = request.get("request_id", "-")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the request being handled."""

    _second, _stamp = -1, ""  # the last second formatted: one strftime a second

    def format(self, record: logging.LogRecord) -> str:
        if int(record.created) != self._second:
            self._second = int(record.created)
            self._stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        entry: dict[str, Any] = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
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

    @property
    def enabled(self) -> bool:
        """Asked once per connection: with the log level above INFO, requests pay nothing."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        who = request.get("tunevault.principal")
        route = route_name(request)
        # A record made directly: Logger.info would also walk the stack for a caller that
        # every access line shares (aiohttp's protocol), once per request.
        record = self.logger.makeRecord(
            self.logger.name,
            logging.INFO,
            __file__,
            0,
            "%s %s %s",
            (request.method, request.path, response.status),
            None,
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
        self.logger.handle(record)
