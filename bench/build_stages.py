"""Where an archive build's time goes, stage by stage, on bf16-like weights.

Adds one stage at a time to the same 1 GiB of data: zstd alone, + reading the files,
+ the sha256 of the input (the rot check), + tunevault's whole `write_archive` (tar and
the output sha256) into nothing, then `build_archive` to local storage at levels 3 and 1.

    .venv/bin/python -m bench.build_stages [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import zstandard

from bench.publish_bench import bf16_weights
from tunevault.archive import write_archive
from tunevault.builds import build_archive
from tunevault.models import Kind
from tunevault.publish import publish_directory
from tunevault.services import open_services
from tunevault.settings import Settings
from tunevault.storage.base import blob_key

CHUNK = 4 << 20


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

        def read(hash_input: bool, sink: Callable[[bytes], object] | None) -> None:
            for p in files:
                h = hashlib.sha256()
                with p.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        if hash_input:
                            h.update(chunk)
                        if sink is not None:
                            sink(chunk)

        def compressed(level: int, hash_input: bool) -> None:
            cctx = zstandard.ZstdCompressor(level=level, threads=-1)
            with cctx.stream_writer(_Null(), closefd=False, write_size=CHUNK) as z:  # type: ignore[arg-type]
                read(hash_input, z.write)

        settings = Settings(data_dir=tmp / "data")
        with open_services(settings) as svc:
            org = svc.store.create_org("b")
            ft = svc.store.create_fine_tune(
                org.id, model="b", model_output_name="b", training_type="Full"
            )
            ckpt = publish_directory(
                svc.store, svc.storage, ft, src, step=1, kind=Kind.MODEL_OUTPUT, final=True
            )

            def archive(level: int) -> None:
                write_archive(
                    ckpt.files,
                    lambda e: svc.storage.open_read(blob_key(e.sha256)),
                    _Null(),
                    level=level,
                )

            stages: list[tuple[str, Callable[[], object]]] = [
                ("read + zstd -3 (all cores)", lambda: compressed(3, False)),
                ("read + sha256 of input + zstd -3", lambda: compressed(3, True)),
                ("write_archive level 3 to nothing (+ tar, output sha256)", lambda: archive(3)),
                (
                    "build_archive level 3 to local storage (+ write, fsync)",
                    lambda: build_archive(svc.store, svc.storage, ckpt.id, level=3),
                ),
                (
                    "build_archive level 1 to local storage",
                    lambda: build_archive(svc.store, svc.storage, ckpt.id, level=1),
                ),
            ]
            print(f"{total / 2**30:.2f} GiB of bf16-like weights in 4 files\n")
            print("| stage | MB/s (input) |\n|---|---|")
            for name, fn in stages:
                t0 = time.perf_counter()
                fn()
                print(f"| {name} | {total / (time.perf_counter() - t0) / 1e6:.0f} |", flush=True)


if __name__ == "__main__":
    main()
