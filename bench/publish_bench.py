"""Publishing throughput, against the usual tools, in the same run.

1. Archive build of a checkpoint directory (bf16-like weights): tunevault's builder
   (read blobs, re-check their xxh3, tar, zstd -3 multi-threaded, hash the output) versus
   `tar -I 'zstd -3 -T0' -cf` on the same files.
2. Upload of one file over loopback: `curl -T` to tunevault's blob upload (hashed and
   verified while it streams, then committed) versus `curl -T` to nginx's WebDAV PUT.

    .venv/bin/python -m bench.publish_bench [--size-mib 2048] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np

from bench.common import random_file
from tests.support.nginx import run_nginx
from tests.support.server import run_server
from tunevault.models import Kind, Scope
from tunevault.publisher.files import sha256_file
from tunevault.service.builds import build_archive
from tunevault.service.context import open_services
from tunevault.service.publishing import publish_directory
from tunevault.settings import Settings


def bf16_weights(path: Path, size: int, seed: int) -> None:
    """Normal(0, 0.02) values as bf16, a synthetic stand-in for trained weights (the
    bench prints the compression ratio it gets)."""
    rng = np.random.default_rng(seed)
    with path.open("wb") as f:
        left = size // 2
        while left > 0:
            n = min(left, 32 << 20)
            f.write(rng.normal(0, 0.02, n).astype(np.float32).astype(ml_dtypes.bfloat16).tobytes())
            left -= n


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


def bench_build(tmp: Path, size: int, repeat: int) -> list[str]:
    src = tmp / "ckpt"
    src.mkdir()
    shards = 4
    for i in range(shards):
        bf16_weights(src / f"model-{i + 1:05d}-of-{shards:05d}.safetensors", size // shards, i)
    (src / "config.json").write_text('{"model_type": "llama"}\n')
    total = sum(p.stat().st_size for p in src.iterdir())
    settings = Settings(data_dir=tmp / "data")
    tv, cli, ratio = [], [], 0.0
    with open_services(settings) as svc:
        org = svc.store.create_org("bench")
        ft = svc.store.create_fine_tune(
            org.id, model="b", model_output_name="b", training_type="Full"
        )
        ckpt = publish_directory(svc, ft, src, step=1, kind=Kind.MODEL_OUTPUT, final=True)
        out = tmp / "cli.tar.zst"
        for _ in range(repeat):
            # Each side starts from the same state: no earlier output to replace (the rename
            # would unlink it inside the timing) and no dirty pages.
            for key in list(svc.storage.list("archives/")):
                svc.storage.delete(key)
            subprocess.run(["sync"], check=True)
            t0 = time.perf_counter()
            archive = build_archive(svc.store, svc.storage, ckpt.id, level=3, threads=-1)
            tv.append(total / (time.perf_counter() - t0) / 1e6)
            ratio = total / archive.size
            out.unlink(missing_ok=True)
            subprocess.run(["sync"], check=True)
            t0 = time.perf_counter()
            subprocess.run(
                ["tar", "-I", "zstd -3 -T0", "-cf", str(out), "-C", str(src), "."], check=True
            )
            cli.append(total / (time.perf_counter() - t0) / 1e6)
        # Untimed: both outputs are whole, and ours is the bytes its ETag names.
        stored = Path(svc.storage.local_path(archive.storage_key))
        assert sha256_file(stored) == archive.sha256, "the stored archive is not what was built"
        for path in (stored, out):
            subprocess.run(["zstd", "-t", "-q", str(path)], check=True)
    shutil.rmtree(src)
    tv_mbs, cli_mbs = statistics.median(tv), statistics.median(cli)
    return [
        f"Archive build, {total / 2**30:.2f} GiB of bf16-like weights in {shards} shards "
        f"(compression {ratio:.2f}x), median of {repeat}:",
        "",
        "| builder | MB/s (input) | runs |",
        "|---|---|---|",
        f"| tunevault build_archive (inputs re-checked, zstd -3, all cores, output sha256, "
        f"fsync) | {tv_mbs:.0f} | {_runs(tv)} |",
        f"| tar -I 'zstd -3 -T0' -cf | {cli_mbs:.0f} | {_runs(cli)} |",
        f"| ratio | {tv_mbs / cli_mbs:.2f}x | |",
    ]


def curl_put(url: str, path: Path, headers: list[str]) -> float:
    args = [a for h in headers for a in ("-H", h)]
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["curl", "-sS", "-f", "-o", "/dev/null", "-T", str(path), *args, url],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    return path.stat().st_size / elapsed / 1e6


def bench_upload(tmp: Path, size: int, repeat: int) -> list[str]:
    src = random_file(tmp / "upload.bin", size)
    digest = sha256_file(src)
    tv, ng = [], []
    dav = tmp / "dav"
    dav.mkdir()
    dav_location = (
        f"location /dav/ {{ alias {dav}/; dav_methods PUT; create_full_put_path on; "
        f"client_max_body_size 0; }}"
    )
    for run in range(repeat):
        data_dir = tmp / f"data{run}"
        with open_services(Settings(data_dir=data_dir)) as svc:
            org = svc.store.create_org("bench")
            _, token = svc.store.create_key(org.id, "b", [Scope.PUBLISH])
        with run_server(data_dir) as server, run_nginx(tmp / "nginx", dav_location) as ng_url:
            tv.append(
                curl_put(
                    f"{server.url}/v1/publish/blobs/{digest}",
                    src,
                    [f"Authorization: Bearer {token}", f"Upload-Length: {size}"],
                )
            )
            ng.append(curl_put(f"{ng_url}/dav/upload-{run}.bin", src, []))
            assert (dav / f"upload-{run}.bin").stat().st_size == size
        shutil.rmtree(data_dir)
        for p in dav.iterdir():
            p.unlink()
    tv_mbs, ng_mbs = statistics.median(tv), statistics.median(ng)
    return [
        f"Upload of {size / 2**30:.2f} GiB over loopback with curl -T, median of {repeat}:",
        "",
        "| server | MB/s | runs |",
        "|---|---|---|",
        f"| tunevault PUT /v1/publish/blobs/{{sha256}} (hashed, verified, committed) "
        f"| {tv_mbs:.0f} | {_runs(tv)} |",
        f"| nginx WebDAV PUT | {ng_mbs:.0f} | {_runs(ng)} |",
        f"| ratio | {tv_mbs / ng_mbs:.2f}x | |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tv-bench-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        lines = bench_build(tmp, args.size_mib << 20, args.repeat)
        print("\n".join(lines), flush=True)
        print()
        print("\n".join(bench_upload(tmp, args.size_mib << 20, args.repeat)))


if __name__ == "__main__":
    main()
