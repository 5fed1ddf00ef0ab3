"""Running the server process: open services, optionally seed the demo, serve until signalled."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from tunevault.server.app import make_app
from tunevault.server.observability import METRICS, AccessLogger
from tunevault.service.context import Services, check_serve_mode, open_services
from tunevault.service.demo import seed_demo_with_key
from tunevault.service.worker import Worker
from tunevault.settings import Settings

log = logging.getLogger("tunevault.server")


def _workers(svc: Services) -> Callable[[web.Application], AsyncIterator[None]]:
    """Build workers as threads of the server process, stopped at shutdown."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        stop = threading.Event()
        builds = _app[METRICS].builds

        def observe(kind: str, outcome: str, seconds: float) -> None:
            builds.labels(kind, outcome).observe(seconds)

        threads = [
            threading.Thread(
                target=Worker(svc, observe=observe).run,
                args=(stop,),
                name=f"worker-{i}",
                daemon=True,
            )
            for i in range(svc.settings.build_workers)
        ]
        for t in threads:
            t.start()
        yield
        stop.set()
        for t in threads:  # a build in progress finishes, or its lease lets another take it
            await asyncio.to_thread(t.join, svc.settings.job_lease_seconds)

    return ctx


def run_server(settings: Settings, *, demo: bool = False) -> None:
    with open_services(settings) as svc:
        check_serve_mode(svc)
        banner = None
        if demo:
            banner = seed_demo_with_key(svc, f"http://{settings.host}:{settings.port}")
        app = make_app(svc)
        app.cleanup_ctx.append(_workers(svc))
        if banner:
            print(banner, flush=True)
        log.info("serving on http://%s:%d", settings.host, settings.port)
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            print=None,
            access_log=logging.getLogger("tunevault.access"),
            access_log_class=AccessLogger,
            # On SIGTERM: stop accepting, let in-flight downloads finish up to the deadline.
            shutdown_timeout=settings.shutdown_grace_seconds,
        )
