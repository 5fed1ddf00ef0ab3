"""`tunevault serve` and `tunevault worker`: running the service."""

from __future__ import annotations

from typing import Any

import click

from tunevault.commands.options import settings_from_flags, store_options


@click.command()
@store_options
@click.option("--host", help="Bind address (TUNEVAULT_HOST, default 127.0.0.1).")
@click.option("--port", type=int, help="TCP port (TUNEVAULT_PORT, default 8000).")
@click.option(
    "--processes",
    type=int,
    help="Serving processes on the port (TUNEVAULT_PROCESSES, default 1); SIGHUP "
    "restarts them without dropping a request.",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Seed a demo organization with real small models "
    "and print a fresh key with commands to try.",
)
def serve(demo: bool, **flags: Any) -> None:
    """Run the HTTP server."""
    from tunevault.server.observability import setup_logging
    from tunevault.server.run import run_server

    settings = settings_from_flags(**flags)
    setup_logging(settings.log_level, settings.log_format)
    try:
        run_server(settings, demo=demo, reload=lambda: settings_from_flags(**flags))
    except OSError as e:  # the usual one: the port is taken
        raise click.ClickException(f"cannot serve on {settings.host}:{settings.port}: {e}") from e
    except ValueError as e:
        raise click.ClickException(str(e)) from e


@click.command()
@store_options
@click.option(
    "--metrics-address",
    "worker_metrics_address",
    help="HOST:PORT to serve /metrics on, read with an operator key "
    "(TUNEVAULT_WORKER_METRICS_ADDRESS; default: none).",
)
def worker(**flags: Any) -> None:
    """Run build jobs (archives, merges) until interrupted; run as many as you like."""
    import signal
    import threading

    from tunevault.server.observability import Metrics, setup_logging
    from tunevault.service.context import open_services
    from tunevault.service.worker import Worker, start_listener

    settings = settings_from_flags(**flags)
    setup_logging(settings.log_level, settings.log_format)
    stop = threading.Event()
    metrics = Metrics()
    with open_services(settings) as opened:
        svc = metrics.instrument(opened)

        def on_signal(*_: Any) -> None:
            stop.set()
            svc.store.jobs_signal.notify()  # wake the idle worker to see the stop

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        server = _metrics_server(svc, metrics)
        start_listener(svc, stop)
        try:
            Worker(svc, observe=metrics.observe_build, takeover=metrics.lease_takeovers.inc).run(
                stop
            )
        finally:
            if server is not None:
                server.stop()


def _metrics_server(svc: Any, metrics: Any) -> Any:
    """The worker's /metrics server, started; None when no address is set."""
    from tunevault.server.workermetrics import MetricsServer, metrics_app, parse_address

    address = svc.settings.worker_metrics_address
    if address is None:
        return None
    try:
        host, port = parse_address(address)
        server = MetricsServer(metrics_app(svc, metrics), host, port)
        server.start()
    except (ValueError, OSError) as e:
        raise click.ClickException(f"cannot serve worker metrics on {address}: {e}") from e
    click.echo(f"worker metrics on http://{address}/metrics (operator key)", err=True)
    return server
