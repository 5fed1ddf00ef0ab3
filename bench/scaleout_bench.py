"""Scale-out figures, against nginx in the same run.

1. The API answer in redirect mode: 200 concurrent clients (bounded: `--requests` in
   all) asking for the same archive on PostgreSQL + S3 (SeaweedFS); latency of the 307
   (p50, p99) and requests per second of resolve-and-redirect.
2. One 2 GiB archive downloaded with curl in each serve mode (proxy: sendfile from local
   disk; redirect: 307 then SeaweedFS; x-accel: nginx sends it) and from nginx directly.
   The S3 and the local copies are built from the same files, and are the same bytes.

    .venv/bin/python -m bench.scaleout_bench [--size-mib 2048] [--requests 4000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import curl_sha256, random_file
from tests.support.nginx import run_nginx, x_accel_locations
from tests.support.postgres import create_database, run_postgres
from tests.support.seaweed import run_seaweedfs
from tests.support.seeding import seed_fine_tune
from tests.support.server import run_server
from tunevault.settings import Settings


def seed(settings: Settings, src: Path) -> tuple[str, str, str, str]:
    """One fine-tune with the files of src; returns (token, ft_id, archive key, sha256)."""
    token, ft, archive = seed_fine_tune(settings, src)
    return token, ft.id, archive.storage_key, archive.sha256


async def redirect_latency(
    url: str, token: str, requests: int, concurrency: int
) -> tuple[float, float, float]:
    latencies: list[float] = []
    todo = iter(range(requests))
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def client() -> None:
            for _ in todo:
                t0 = time.perf_counter()
                async with session.get(
                    url, allow_redirects=False, headers={"Authorization": f"Bearer {token}"}
                ) as r:
                    assert r.status == 307, r.status
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    latencies.sort()

    def p(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return p(0.50), p(0.99), len(latencies) / elapsed


def curl_mbs(url: str, headers: list[str], expect: int) -> float:
    args = [a for h in headers for a in ("-H", h)]
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-f",
            "-L",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert int(out[0]) == expect, (url, out)
    return expect / float(out[1]) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tv-bench-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "src"
        src.mkdir()
        random_file(src / "model.safetensors", args.size_mib << 20)
        local = Settings(data_dir=tmp / "local")
        token_l, ft_l, key_l, sha_l = seed(local, src)
        size = (local.data_dir / "blobs" / key_l).stat().st_size
        with run_postgres() as pg, run_seaweedfs(tmp / "weed") as weed, weed.bucket() as b:
            saved = {k: os.environ.get(k) for k in weed.env()}
            os.environ.update(weed.env())
            s3 = Settings(
                data_dir=tmp / "s3",
                database_url=create_database(pg, "bench"),
                storage_url=weed.storage_url(b),
            )
            token_s, ft_s, _, sha_s = seed(s3, src)
            assert sha_s == sha_l, "the same files must give the same archive"
            env = {
                **weed.env(),
                "TUNEVAULT_DATABASE_URL": str(s3.database_url),
                "TUNEVAULT_STORAGE_URL": str(s3.storage_url),
                "TUNEVAULT_SERVE_MODE": "redirect",
                "TUNEVAULT_RATE_LIMIT_PER_MINUTE": "0",
            }
            q = "/v1/finetune/download?checkpoint=model_output_path&ft_id="
            with (
                run_server(tmp / "s3", env=env) as redirect,
                run_server(local.data_dir) as proxy,
                run_server(local.data_dir, env={"TUNEVAULT_SERVE_MODE": "x-accel"}) as xa,
                run_nginx(
                    tmp / "nginx",
                    x_accel_locations(xa.url, local.data_dir / "blobs", "/_tunevault_blobs/")
                    + f"\n location /files/ {{ alias {local.data_dir / 'blobs'}/; }}",
                ) as front,
            ):
                p50, p99, rps = asyncio.run(
                    redirect_latency(
                        redirect.url + q + ft_s, token_s, args.requests, args.concurrency
                    )
                )
                print(
                    f"redirect answers: p50 {p50:.1f} ms, p99 {p99:.1f} ms, {rps:.0f} req/s",
                    flush=True,
                )
                cases = {
                    "proxy (sendfile, local disk)": (proxy.url + q + ft_l, token_l),
                    "redirect (307 + SeaweedFS)": (redirect.url + q + ft_s, token_s),
                    "x-accel (nginx sends)": (front + q + ft_l, token_l),
                    "nginx directly (reference)": (f"{front}/files/{key_l}", None),
                }
                rows = []
                for name, (url, token) in cases.items():
                    hdr = [f"Authorization: Bearer {token}"] if token else []
                    runs = [curl_mbs(url, hdr, size) for _ in range(args.repeat)]
                    assert curl_sha256(url, hdr) == sha_l, f"{name} served other bytes"
                    rows.append((name, statistics.median(runs)))
                    print(f"{name}: {rows[-1][1]:.0f} MB/s", flush=True)
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    ref = rows[-1][1]
    print(
        f"\n{args.requests} redirect requests, {args.concurrency} concurrent clients, "
        f"PostgreSQL + SeaweedFS: p50 {p50:.1f} ms, p99 {p99:.1f} ms, {rps:.0f} requests/s\n"
    )
    print(f"One {size / 2**30:.2f} GiB archive with curl, median of {args.repeat}:\n")
    print("| mode | MB/s | vs nginx |")
    print("|---|---|---|")
    for name, mbs in rows:
        print(f"| {name} | {mbs:.0f} | {mbs / ref:.2f}x |")


if __name__ == "__main__":
    main()
