"""A fleet's request path (issue 16): many clients at once, each asking for one thing.

1. Redirect mode on PostgreSQL + SeaweedFS: 200 keep-alive clients ask for the same
   archive (`GET /v1/finetune/download`) and for the same Hub file
   (`GET /{repo}/resolve/main/{file}`); each answer is a 307 to a presigned URL. The
   server runs with `--processes 1` and with `--processes N`.
   Each route is measured twice: clients that ask again at once (the server's capacity;
   latency is then mostly queueing) and clients that pause `--think-ms` after each answer
   (about 2,000 requests/s offered by 200 clients: the latency a fleet at that rate sees).
2. Small archives (~0.5 MiB, an adapter's) in proxy mode on the embedded default (SQLite
   + local disk): tunevault (`--processes N`, per-key limits at their defaults) against
   nginx (`worker_processes auto`) serving the same file to the same client, and against
   aiohttp alone (bench/bare_aiohttp.py, N processes): the framework's own ceiling.

The client is wrk (bench/loadgen.py); its own CPU time is printed beside each figure, as
is the 1-minute load average before each run. Runs alternate between the two sides.
"server CPU us/answer" is the serving processes' user + system time over the run divided
by its answers: the figure least disturbed by other load on the machine.

    .venv/bin/python -m bench.fleet_bench [--seconds 10] [--connections 200] [--processes 2]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.common import random_file, tree_cpu
from bench.loadgen import Load, load_average, wrk
from tests.support.nginx import run_nginx
from tests.support.postgres import create_database, free_port, run_postgres
from tests.support.seaweed import run_seaweedfs
from tests.support.seeding import seed_fine_tune
from tests.support.server import run_server, wait_healthy
from tunevault.service.context import open_services
from tunevault.settings import Settings

Q = "/v1/finetune/download?checkpoint=model_output_path&ft_id="


def row(name: str, load: Load, avg: float, server_cpu: float) -> str:
    return (
        f"| {name} | {load.rps:.0f} | {load.p50_ms:.1f} | {load.p99_ms:.1f} | {load.bad} | "
        f"{server_cpu / load.requests * 1e6:.0f} | "
        f"{load.cpu_seconds / load.seconds:.2f} | {avg:.1f} |"
    )


def measured(
    url: str, headers: list[str], args: argparse.Namespace, pid: int, think_ms: int = 0
) -> tuple[Load, float]:
    """wrk's load on `url` and the CPU seconds the server `pid` spent answering it."""
    before = tree_cpu(pid)
    load = wrk(url, headers, args.connections, args.seconds, think_ms)
    return load, tree_cpu(pid) - before


def status(url: str, headers: list[str]) -> str:
    args = [a for h in headers for a in ("-H", h)]
    return subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@contextlib.contextmanager
def redirect_store(tmp: Path, src: Path) -> Iterator[tuple[Path, dict[str, str], str, str]]:
    """A fine-tune on PostgreSQL + SeaweedFS; yields (data dir, server env, token, ft id)."""
    with run_postgres() as pg, run_seaweedfs(tmp / "weed") as weed, weed.bucket() as b:
        saved = {k: os.environ.get(k) for k in weed.env()}
        os.environ.update(weed.env())
        s3 = Settings(
            data_dir=tmp / "s3",
            database_url=create_database(pg, "bench"),
            storage_url=weed.storage_url(b),
        )
        token, ft, _ = seed_fine_tune(s3, src)
        env = {
            **weed.env(),
            "TUNEVAULT_DATABASE_URL": str(s3.database_url),
            "TUNEVAULT_STORAGE_URL": str(s3.storage_url),
            "TUNEVAULT_SERVE_MODE": "redirect",
            # A fleet's deployment key asks far more than one person's: the default bucket
            # (60,000 a minute, per process) would run dry within a minute of these runs.
            "TUNEVAULT_RATE_LIMIT_PER_MINUTE": "600000",
        }
        try:
            yield s3.data_dir, env, token, ft.id
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def redirect_rows(tmp: Path, args: argparse.Namespace) -> list[str]:
    src = tmp / "big"
    src.mkdir()
    random_file(src / "model.safetensors", 1 << 20)
    rows = []
    with redirect_store(tmp, src) as (data_dir, env, token, ft_id):
        auth = [f"Authorization: Bearer {token}"]
        for processes in (1, args.processes):
            with run_server(data_dir, env=env, args=("--processes", str(processes))) as srv:
                urls = {
                    "download": srv.url + Q + ft_id,
                    "Hub resolve": f"{srv.url}/{ft_id}/resolve/main/model.safetensors",
                }
                for (route, url), think in itertools.product(urls.items(), (0, args.think_ms)):
                    assert status(url, auth) == "307", route
                    avg = load_average()
                    load, cpu = measured(url, auth, args, srv.process.pid, think)
                    paced = f", {think} ms between answer and next ask" if think else ""
                    name = f"{route}, {processes} process(es){paced}"
                    rows.append(row(name, load, avg, cpu))
                    print(rows[-1], flush=True)
    return rows


@contextlib.contextmanager
def run_bare(path: Path, processes: int) -> Iterator[tuple[str, int]]:
    """bench.bare_aiohttp serving `path`: yields (its URL, its first process's pid), once
    it answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_aiohttp", str(path), str(port), str(processes)],
        start_new_session=True,  # its forked processes leave with it (killpg below)
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=30)
        yield f"{url}/file", proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def small_rows(tmp: Path, args: argparse.Namespace) -> list[str]:
    src = tmp / "adapter"
    src.mkdir()
    random_file(src / "adapter_model.safetensors", args.small_kib << 10)
    settings = Settings(data_dir=tmp / "local")
    token, ft, archive = seed_fine_tune(settings, src)
    with open_services(settings) as svc:
        path = Path(svc.storage.local_path(archive.storage_key))
    auth = [f"Authorization: Bearer {token}"]
    rows = []
    procs = ("--processes", str(args.processes))
    with (
        run_server(settings.data_dir, args=procs) as srv,
        run_nginx(
            tmp / "nginx", f"location /files/ {{ alias {path.parent}/; }}", workers="auto"
        ) as ng,
        run_bare(path, args.processes) as (bare_url, bare_pid),
    ):
        tv_url, ng_url = srv.url + Q + ft.id, f"{ng}/files/{path.name}"
        assert status(tv_url, auth) == "200" and status(ng_url, []) == "200"
        ng_pid = int((tmp / "nginx" / "nginx.pid").read_text())
        sides: tuple[tuple[str, str, list[str], int], ...] = (
            ("tunevault", tv_url, auth, srv.process.pid),
            ("nginx", ng_url, [], ng_pid),
            ("aiohttp alone (no auth, audit, limits, metrics or log)", bare_url, [], bare_pid),
        )
        for run in range(args.repeat):
            for name, url, headers, pid in sides:
                avg = load_average()
                load, cpu = measured(url, headers, args, pid)
                rows.append(row(f"{name} (run {run + 1})", load, avg, cpu))
                print(rows[-1], flush=True)
    print(f"small archive: {archive.size} bytes", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--small-kib", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", choices=("redirect", "small"))
    # 200 clients each asking again 90 ms after an answer offer a little over 2,000
    # requests/s: the fleet the target describes, rather than clients that never pause.
    ap.add_argument("--think-ms", type=int, default=90)
    args = ap.parse_args()
    header = (
        "| case | requests/s | p50 ms | p99 ms | errors | server CPU us/answer "
        "| wrk CPU (cores) | load avg |"
    )
    with tempfile.TemporaryDirectory(prefix="tv-bench-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        for part, fn in (("redirect", redirect_rows), ("small", small_rows)):
            if args.only in (None, part):
                rows = fn(tmp, args)
                print(f"\n{part}, {args.connections} connections, {args.seconds} s each:\n")
                print(header + "\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
