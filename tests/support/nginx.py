"""A real nginx on a loopback port, configured per test or benchmark."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support.postgres import free_port


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if Path(p).exists()), None
    )


def x_accel_locations(upstream: str, storage_root: Path, prefix: str) -> str:
    """The nginx side of tunevault's x-accel mode (the same text as in docs/deploy.md)."""
    return f"""
        location / {{
            proxy_pass {upstream};
            proxy_buffering off;
            proxy_request_buffering off;
            client_max_body_size 0;
        }}
        location {prefix} {{
            internal;
            alias {storage_root}/;
            etag off;  # nginx's mtime-size tag would replace ours; keep tunevault's sha256
            add_header ETag $upstream_http_etag always;
            add_header Repr-Digest $upstream_http_repr_digest always;
            add_header X-Repo-Commit $upstream_http_x_repo_commit always;
            add_header X-Linked-Etag $upstream_http_x_linked_etag always;
            add_header X-Linked-Size $upstream_http_x_linked_size always;
        }}"""


@contextlib.contextmanager
def run_nginx(
    workdir: Path, locations: str, *, workers: str = "1", listen: str = "", http: str = ""
) -> Iterator[str]:
    """nginx (sendfile on, one worker) with the given `location` blocks; yields its URL.
    `workers`, `listen` (options of the listen directive) and `http` (more directives)
    tune it as an operator would (bench/serve_bench.py)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
{worker_user()}
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    {http}
    {temp_paths(workdir)}
    server {{
        listen 127.0.0.1:{port} {listen};
        {locations}
    }}
}}
""")
    with serve_nginx(conf, workdir, port) as url:
        yield url


def worker_user() -> str:
    # Blobs are private (0600, like the rest of the data dir): the worker runs as us.
    return f"user {getpass.getuser()};" if os.geteuid() == 0 else ""


def temp_paths(workdir: Path) -> str:
    """Directives that keep nginx's temp files in workdir (an `http` block's)."""
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    return " ".join(f"{kind}_temp_path {workdir}/{kind};" for kind in kinds)


@contextlib.contextmanager
def serve_nginx(conf: Path, workdir: Path, port: int) -> Iterator[str]:
    """Run nginx (in the foreground) with a complete configuration listening on port."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (scripts/test installs it)")
    with (workdir / "nginx.out").open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # nginx answered
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError((workdir / "nginx.out").read_text()) from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
