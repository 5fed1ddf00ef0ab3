"""The ceiling of the framework: aiohttp alone answering every GET with one file's bytes
(read once), with no authentication, resolution, audit, limits, metrics or access log.

bench.fleet_bench runs it beside tunevault and nginx on the small-archive case, so the
distance from tunevault to nginx splits into what aiohttp costs and what tunevault adds.
PROCESSES processes (forked after the read) each bind the port with SO_REUSEPORT, as
tunevault's serving processes do; stop them all by signalling the process group.

    .venv/bin/python -m bench.bare_aiohttp FILE PORT [PROCESSES]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    path, port = Path(sys.argv[1]), int(sys.argv[2])
    processes = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    body = path.read_bytes()
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    headers = {"Content-Type": "application/zstd", "ETag": '"bench"'}

    async def send(_request: web.Request) -> web.Response:
        return web.Response(body=body, headers=headers)

    async def healthy(_request: web.Request) -> web.Response:
        return web.Response(text="ok")  # for the bench's wait_healthy

    app = web.Application()
    app.router.add_get("/file", send)
    app.router.add_get("/healthz", healthy)
    web.run_app(app, host="127.0.0.1", port=port, reuse_port=True, access_log=None, print=None)


if __name__ == "__main__":
    main()
