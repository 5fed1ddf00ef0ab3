"""`tunevault worker --metrics-address`: the worker's /metrics on a port of its own.

The same route and the same rule as the server's: a key with the `operator` scope (one
credential for Prometheus to scrape servers and workers alike; a loopback-only port would
leave every local user and container sidecar reading it, and a scraper on another host not
at all). The app runs on an event loop of its own thread, beside the synchronous worker.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from tunevault.server import ops
from tunevault.server.app import auth_middleware, error_middleware
from tunevault.server.clients import FAILURES, TRUSTED, FailureLimits, client_middleware
from tunevault.server.context import KEY_CACHE, LIMITS, SERVICES
from tunevault.server.inflight import INFLIGHT, InFlight
from tunevault.server.limits import KeyLimits
from tunevault.server.observability import METRICS, Metrics, request_id_middleware
from tunevault.service.accounts import KeyCache
from tunevault.service.context import Services


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 in brackets: `[::1]:9100`), or ValueError naming the form."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"worker_metrics_address must be HOST:PORT (like 127.0.0.1:9100), not {text!r}"
        )
    return host, int(port)


def metrics_app(svc: Services, metrics: Metrics) -> web.Application:
    settings = svc.settings
    app = web.Application(
        middlewares=[request_id_middleware, client_middleware, error_middleware, auth_middleware]
    )
    app[SERVICES] = svc
    app[METRICS] = metrics
    app[KEY_CACHE] = KeyCache(settings.auth_cache_seconds)
    app[INFLIGHT] = InFlight()
    app[TRUSTED] = tuple(settings.trusted_proxies)
    app[FAILURES] = FailureLimits(settings.auth_failures_per_minute)
    app[LIMITS] = KeyLimits(settings.rate_limit_per_minute, settings.max_downloads_per_key)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/metrics", ops.metrics)
    return app


class MetricsServer:
    """An aiohttp app served from a thread: `start` binds (raising OSError if it cannot),
    `stop` closes it."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="metrics-server", daemon=True
        )

    def start(self) -> None:
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            self._loop.run_until_complete(site.start())
        except OSError:
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()
            raise
        self._thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
