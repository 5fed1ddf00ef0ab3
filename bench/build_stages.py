"""Where an archive build's time goes, stage by stage, on bf16-like weights.

Adds one stage at a time to the same 1 GiB of data: reading the files into zstd, + the
xxh3 of the input (the rot check), or its sha256 instead (blobs recorded before xxh3
digests were), + tunevault's whole `write_archive` (tar, the output sha256 on the writer
thread) into nothing, then `build_archive` to local storage (write, fsync) at levels 3
and 1. Also the bare speed of each hash on this CPU.

    .venv/bin/python -m bench.build_stages [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import xxhash
import zstandard

from bench.publish_bench import bf16_weights
from tunevault.archive.write import CHUNK, write_archive
from tunevault.layout import blob_key
from tunevault.models import Archive, Kind
from tunevault.service.builds import build_archive
from tunevault.service.context import open_services
from tunevault.service.publishing import publish_directory
from tunevault.settings import Settings


class Hash(Protocol):
    def update(self, data: memoryview, /) -> None: ...


class _Null:
    def write(self, data: bytes | memoryview) -> int:
        return len(data)

    def flush(self) -> None:
        """Nothing buffered."""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tv-bench-", dir="/var/tmp") as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "src"
        src.mkdir()
        for i in range(4):
            bf16_weights(src / f"model-{i}.safetensors", (args.size_mib << 20) // 4, i)
        files = sorted(src.iterdir())
        total = sum(p.stat().st_size for p in files)

        buf = memoryview(bytearray(CHUNK))

        def compressed(level: int, hash_input: Callable[[], Hash] | None) -> None:
            cctx = zstandard.ZstdCompressor(level=level, threads=-1)
            with cctx.stream_writer(_Null(), closefd=False, write_size=CHUNK) as z:  # type: ignore[arg-type]
                for p in files:
                    h = hash_input() if hash_input else None
                    with p.open("rb", buffering=0) as f:
                        while n := f.readinto(buf):
                            if h is not None:
                                h.update(buf[:n])
                            z.write(buf[:n])

        data = bytes(CHUNK)
        hash_speed = {}
        for name, make in (("sha256", hashlib.sha256), ("xxh3-128", xxhash.xxh3_128)):
            h = make()
            t0 = time.perf_counter()
            for _ in range(1024):  # 1 GiB through the same 1 MiB buffer
                h.update(data)
            hash_speed[name] = 1024 * CHUNK / (time.perf_counter() - t0) / 1e6

        settings = Settings(data_dir=tmp / "data")
        with open_services(settings) as svc:
            org = svc.store.create_org("b")
            ft = svc.store.create_fine_tune(
                org.id, model="b", model_output_name="b", training_type="Full"
            )
            ckpt = publish_directory(svc, ft, src, step=1, kind=Kind.MODEL_OUTPUT, final=True)

            xxh3 = svc.store.blob_xxh3(f.sha256 for f in ckpt.files)

            def archive(level: int) -> None:
                write_archive(
                    ckpt.files,
                    lambda e: svc.storage.open_read(blob_key(e.sha256)),
                    _Null(),
                    level=level,
                    xxh3=xxh3,
                )

            def build(level: int) -> Archive:
                return build_archive(svc.store, svc.storage, ckpt.id, level=level)

            def checked(archive: Archive) -> str:
                """Untimed: the stored bytes hash to the recorded sha256; the ratio."""
                h = hashlib.sha256()
                with svc.storage.open_read(archive.storage_key) as f:
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
                assert h.hexdigest() == archive.sha256, "the stored archive is not what was built"
                return f"{total / archive.size:.3f}x, sha256 checked"

            stages: list[tuple[str, Callable[[], object]]] = [
                ("read + zstd -3 (all cores)", lambda: compressed(3, None)),
                ("read + xxh3 of input + zstd -3", lambda: compressed(3, xxhash.xxh3_128)),
                ("read + sha256 of input + zstd -3", lambda: compressed(3, hashlib.sha256)),
                ("write_archive level 3 to nothing (+ tar, output sha256)", lambda: archive(3)),
                ("build_archive level 3 to local storage (+ write, fsync)", lambda: build(3)),
                ("build_archive level 1 to local storage", lambda: build(1)),
            ]
            print(f"{total / 2**30:.2f} GiB of bf16-like weights in 4 files")
            print(", ".join(f"{k} alone {v:.0f} MB/s" for k, v in hash_speed.items()) + "\n")
            print("| stage | MB/s (input) | archive |\n|---|---|---|")
            for name, fn in stages:
                for key in list(svc.storage.list("archives/")):
                    svc.storage.delete(key)  # a build must not pay for replacing the last
                subprocess.run(["sync"], check=True)
                t0 = time.perf_counter()
                result = fn()
                mbs = total / (time.perf_counter() - t0) / 1e6
                out = checked(result) if isinstance(result, Archive) else ""
                print(f"| {name} | {mbs:.0f} | {out} |", flush=True)


if __name__ == "__main__":
    main()
