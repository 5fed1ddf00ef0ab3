"""Running the server process: open services, optionally seed the demo, serve until signalled."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from tunevault.server.app import make_app
from tunevault.server.edge import EnvelopeRunner
from tunevault.server.observability import METRICS, AccessLogger, Metrics
from tunevault.server.prefork import BACKLOG, Master, bind
from tunevault.service.context import Services, check_serve_mode, open_services
from tunevault.service.demo import seed_demo_with_key
from tunevault.service.worker import Worker, start_listener
from tunevault.settings import Settings

log = logging.getLogger("tunevault.server")


def _workers(svc: Services) -> Callable[[web.Application], AsyncIterator[None]]:
    """Build workers as threads of the server process, stopped at shutdown."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        stop = threading.Event()
        metrics = _app[METRICS]
        threads = [
            threading.Thread(
                target=Worker(
                    svc, observe=metrics.observe_build, takeover=metrics.lease_takeovers.inc
                ).run,
                args=(stop,),
                name=f"worker-{i}",
                daemon=True,
            )
            for i in range(svc.settings.build_workers)
        ]
        for t in threads:
            t.start()
        if threads:
            start_listener(svc, stop)
        yield
        stop.set()
        svc.store.jobs_signal.notify()  # idle workers wake to see the stop
        for t in threads:  # a build in progress finishes, or its lease lets another take it
            await asyncio.to_thread(t.join, svc.settings.job_lease_seconds)

    return ctx


def run_server(
    settings: Settings, *, demo: bool = False, reload: Callable[[], Settings] | None = None
) -> None:
    """Serve until signalled: in this process, or with `settings.processes` > 1 in that
    many forked ones behind a master (server/prefork.py; `reload` reads the settings
    again for a SIGHUP restart)."""
    if settings.processes > 1:
        if demo:
            raise ValueError("--demo serves with one process: leave out --processes")
        with open_services(settings) as svc:  # migrate and check once, before any fork
            check_serve_mode(svc)
        socks = bind(settings.host, settings.port, settings.processes)
        Master(settings, socks, _serve_child, reload or (lambda: settings)).run()
        return
    with open_services(settings) as svc:
        check_serve_mode(svc)
        banner = None
        if demo:
            banner = seed_demo_with_key(svc, f"http://{settings.host}:{settings.port}")
        app = _app(svc)
        if banner:
            print(banner, flush=True)
        asyncio.run(_serve(app, settings))


def _app(opened: Services) -> web.Application:
    """The app over the services, timed for the metrics, with its build workers."""
    metrics = Metrics()
    svc = metrics.instrument(opened)
    app = make_app(svc, metrics)
    # First in, last out: at shutdown the audit queue is drained before the wait for a
    # build in progress (up to job_lease_seconds), which a stop timeout may cut short.
    app.cleanup_ctx.insert(0, _workers(svc))
    return app


def _serve_child(settings: Settings, sock: socket.socket, ready_fd: int) -> None:
    """One of the master's serving processes, on the socket it bound."""
    with open_services(settings) as svc:
        asyncio.run(_serve(_app(svc), settings, sock, ready_fd))


async def _serve(
    app: web.Application,
    settings: Settings,
    sock: socket.socket | None = None,
    ready_fd: int | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, let in-flight requests finish
    (up to shutdown_grace_seconds) and only then drain the audit queue and stop workers.
    On the master's `sock`, say so on `ready_fd` once accepting."""
    runner = EnvelopeRunner(
        app,
        handle_signals=False,
        access_log=logging.getLogger("tunevault.access"),
        access_log_class=AccessLogger,
        shutdown_timeout=settings.shutdown_grace_seconds,
    )
    await runner.setup()
    try:
        if sock is None:
            await web.TCPSite(runner, settings.host, settings.port).start()
            log.info("serving on http://%s:%d", settings.host, settings.port)
        else:
            await web.SockSite(runner, sock, backlog=BACKLOG).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready_fd is not None:
            os.write(ready_fd, b"1")
            os.close(ready_fd)
        await stop.wait()
        log.info(
            "stopping: in-flight requests have up to %g s to finish",
            settings.shutdown_grace_seconds,
        )
    finally:
        await runner.cleanup()
    log.info("stopped")
