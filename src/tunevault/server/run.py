"""Running the server process: open services, optionally seed the demo, serve until signalled."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from tunevault.demo import DEMO_ORG, seed_demo
from tunevault.models import Scope
from tunevault.server.app import make_app
from tunevault.server.observability import METRICS, AccessLogger
from tunevault.services import Services, open_services
from tunevault.settings import Settings
from tunevault.storage import Unsupported
from tunevault.worker import Worker

log = logging.getLogger("tunevault.server")


def _tool(name: str) -> str:
    """The tool next to this interpreter (the venv's), else the bare name for PATH."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def demo_banner(svc: Services, token: str, base_url: str) -> str:
    org = svc.store.get_org_by_name(DEMO_ORG)
    assert org is not None
    together, tunevault = _tool("together"), _tool("tunevault")
    lines = ["", "tunevault demo is ready.", f"  API key (shown once): {token}", ""]
    for ft in svc.store.list_fine_tunes(org.id):
        kind = "merged" if ft.is_lora else "model_output_path"
        lines += [
            f"  {ft.training_type} fine-tune {ft.id} ({ft.model_output_name})",
            f"    curl -fSL -H 'Authorization: Bearer {token}' -o {ft.suffix}.tar.zst \\",
            f"      '{base_url}/v1/finetune/download?ft_id={ft.id}&checkpoint={kind}'",
            f"    TOGETHER_BASE_URL={base_url} TOGETHER_API_KEY={token} \\",
            f"      {together} fine-tuning download {ft.id}",
            f"    TUNEVAULT_URL={base_url} TUNEVAULT_API_KEY={token} \\",
            f"      {tunevault} download {ft.id}:10 --extract ./{ft.suffix}-step10",
            f"    HF_ENDPOINT={base_url} HF_TOKEN={token} \\",
            f"      {_tool('hf')} download {ft.model_output_name} --local-dir ./{ft.suffix}-hf",
            "",
        ]
    return "\n".join(lines)


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


def check_serve_mode(svc: Services) -> None:
    """Refuse at start a serve mode the storage cannot do, not at the first download."""
    mode = svc.settings.serve_mode
    try:
        if mode == "redirect":
            svc.storage.presigned_url("healthcheck", expires=60)
        elif mode == "x-accel":
            svc.storage.local_path("healthcheck")
    except Unsupported as e:
        raise ValueError(f"serve_mode={mode} does not work with this storage: {e}") from e


def run_server(settings: Settings, *, demo: bool = False) -> None:
    with open_services(settings) as svc:
        check_serve_mode(svc)
        banner = None
        if demo:
            org, _ = seed_demo(svc)
            _, token = svc.store.create_key(org.id, "demo", [Scope.READ, Scope.PUBLISH])
            banner = demo_banner(svc, token, f"http://{settings.host}:{settings.port}")
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
