"""Helpers shared by the benchmarks: data generation, nginx, curl, RSS sampling."""

from __future__ import annotations

import getpass
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.postgres import free_port

NGINX = next((p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if Path(p).exists()), "nginx")


def random_file(path: Path, size: int) -> Path:
    """Incompressible bytes: zstd gains little on real bf16 weights either (~1.28x)."""
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n
    return path


@contextmanager
def run_nginx(root: Path, workdir: Path, extra: str = "") -> Iterator[str]:
    """nginx serving files under `root` on a loopback port, sendfile on."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    # Blobs are private (0600, like the rest of the data dir): the worker runs as us.
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    conf.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /files/ {{ alias {root}/; }}
        {extra}
    }}
}}
""")
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(workdir)])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                subprocess.run(["curl", "-sf", "-o", "/dev/null", f"{url}/files/"], timeout=2)
                break
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def curl_many(urls: list[str], headers: list[str], expect_bytes: int) -> float:
    """Start one curl per URL at once; returns the aggregate MB/s over the wall time."""
    args = [a for h in headers for a in ("-H", h)]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}", *args, u],
            stdout=subprocess.PIPE,
            text=True,
        )
        for u in urls
    ]
    total = 0
    for p in procs:
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, f"curl failed with {p.returncode}"
        total += int(out)
    elapsed = time.perf_counter() - t0
    assert total == expect_bytes, (total, expect_bytes)
    return total / elapsed / 1e6


class RssSampler:
    """Peak resident memory of a process, sampled from /proc every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._stop.wait(0.05):
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
