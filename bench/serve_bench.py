"""Serving one 2 GiB archive: tunevault (aiohttp, sendfile) versus nginx (sendfile on,
tuned: `listen ... sndbuf=4m`, `sendfile_max_chunk 0`, `worker_processes auto`).

Same file, same machine, same client (curl), same run: single stream and 32 concurrent
downloads, each of the whole archive and of the second half (`Range: bytes=N-`), plus the
peak RSS of the tunevault server during the concurrent runs.

    .venv/bin/python -m bench.serve_bench [--size-mib 2048] [--concurrency 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from pathlib import Path

from bench.common import RssSampler, curl_many, curl_sha256, random_file
from tests.support.nginx import run_nginx
from tests.support.seeding import seed_fine_tune
from tests.support.server import run_server
from tunevault.publisher.files import sha256_file
from tunevault.service.context import open_services
from tunevault.settings import Settings

# nginx as a careful operator tunes it for large files: a 4 MiB send buffer (as tunevault
# sets), no cap on one sendfile call, a worker per core.
TUNED = {"workers": "auto", "listen": "sndbuf=4m", "http": "sendfile_max_chunk 0;"}


def prepare(data_dir: Path, size: int) -> tuple[str, str, Path, int]:
    """A fine-tune whose archive is ~size bytes; returns (token, ft_id, archive path, size)."""
    src = data_dir / "src"
    src.mkdir(parents=True)
    random_file(src / "model-00001-of-00002.safetensors", size // 2)
    random_file(src / "model-00002-of-00002.safetensors", size - size // 2)
    settings = Settings(data_dir=data_dir)
    token, ft, archive = seed_fine_tune(settings, src)
    with open_services(settings) as svc:
        path = Path(svc.storage.local_path(archive.storage_key))
    for f in src.iterdir():
        f.unlink()
    return token, ft.id, path, archive.size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tv-bench-") as tmp_name:
        tmp = Path(tmp_name)
        token, ft_id, archive, size = prepare(tmp / "data", args.size_mib << 20)
        half = size // 2
        rows: list[tuple[str, float, float]] = []
        peak_mb = 0.0
        with (
            run_server(tmp / "data") as server,
            run_nginx(
                tmp / "nginx",
                f"location /files/ {{ alias {archive.parent}/; }}",
                **TUNED,
            ) as ng,
        ):
            tv_url = f"{server.url}/v1/finetune/download?ft_id={ft_id}&checkpoint=model_output_path"
            ng_url = f"{ng}/files/{archive.name}"
            auth = [f"Authorization: Bearer {token}"]
            cases = [
                ("1 stream, full", 1, [], size),
                (f"1 stream, bytes={half}-", 1, [f"Range: bytes={half}-"], size - half),
                (f"{args.concurrency} streams, full", args.concurrency, [], size),
                (
                    f"{args.concurrency} streams, bytes={half}-",
                    args.concurrency,
                    [f"Range: bytes={half}-"],
                    size - half,
                ),
            ]
            for name, n, headers, each in cases:
                tv, ng_runs = [], []
                for _ in range(args.repeat):
                    with RssSampler(server.process.pid) as rss:
                        tv.append(curl_many([tv_url] * n, auth + headers, each * n))
                    peak_mb = max(peak_mb, rss.peak_kb / 1024) if n > 1 else peak_mb
                    ng_runs.append(curl_many([ng_url] * n, headers, each * n))
                rows.append((name, statistics.median(tv), statistics.median(ng_runs)))
                print(
                    f"{name}: tunevault {rows[-1][1]:.0f} MB/s, nginx {rows[-1][2]:.0f} MB/s",
                    flush=True,
                )
            # Untimed: what was timed is the archive, byte for byte.
            assert curl_sha256(tv_url, auth) == sha256_file(archive), "served other bytes"
    print(
        f"\nArchive {size / 2**30:.2f} GiB, median of {args.repeat} runs, "
        f"{platform.processor() or platform.machine()}, nginx tuned: {TUNED}.\n"
    )
    print("| case | tunevault MB/s | nginx MB/s | ratio |")
    print("|---|---|---|---|")
    for name, tv_mbs, ng_mbs in rows:
        print(f"| {name} | {tv_mbs:.0f} | {ng_mbs:.0f} | {tv_mbs / ng_mbs:.2f}x |")
    print(f"\nPeak tunevault server RSS during the concurrent runs: {peak_mb:.0f} MiB")


if __name__ == "__main__":
    main()
