"""CPU per merged block: merge.apply's fused bf16 path against its general path (ml_dtypes
casts over the whole block), on the block shapes of bench.merge_bench's model.

A bf16 base tensor and a rank-16 fp32 LoRA (scale 2) are written to a temporary file; the
same `_Merger` produces every block of the tensor with its fused path on and off, in
alternating rounds; the figure is the median over rounds of the CPU seconds per block
(reading the rows from the page cache included). It also checks that both give the same
bits.

    .venv/bin/python -m bench.merge_block_bench [--rounds 9]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tunevault.merge.apply import _Merger, _Scratch
from tunevault.merge.blas import single_threaded_blas
from tunevault.merge.plan import Job, LoraOp, row_blocks
from tunevault.merge.safetensors_io import OutSpec, TensorInfo

RANK = 16
# (out features, in features): attention (and MLP up and gate, in 2048 x 2048 blocks), MLP down.
SHAPES = [(2048, 2048), (2048, 5632)]


def tensor(path: Path, name: str, dtype: str, array: np.ndarray[Any, Any]) -> TensorInfo:
    start = path.stat().st_size if path.exists() else 0
    with path.open("ab") as f:
        f.write(array.tobytes())
    return TensorInfo(name, path, dtype, array.shape, start, start + array.nbytes)


def make_job(path: Path, out_f: int, in_f: int) -> Job:
    rng = np.random.default_rng(0)
    bf16_bits = rng.normal(0, 0.02, (out_f, in_f)).astype(np.float32).view(np.uint32) >> 16
    base = tensor(path, "w", "BF16", bf16_bits.astype(np.uint16))
    a = tensor(path, "a", "F32", rng.normal(0, 0.02, (RANK, in_f)).astype(np.float32))
    b = tensor(path, "b", "F32", rng.normal(0, 0.02, (out_f, RANK)).astype(np.float32))
    lora = LoraOp(a=a, b=b, scale=2.0, layout="out_in", magnitude=None)
    return Job(out=OutSpec("w", "BF16", (out_f, in_f)), source=base, lora=lora)


def per_block(merger: _Merger, fused: bool) -> tuple[float, list[bytes]]:
    merger.fused = fused
    blocks = row_blocks(merger.job.source.shape)
    start = time.process_time()
    out = [merger.block(r0, r1, "out0").tobytes() for r0, r1 in blocks]
    return (time.process_time() - start) / len(blocks), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    print(f"rank {RANK}, bf16 base, median of {args.rounds} alternating rounds")
    print("| block (rows x cols) | general path | fused path | general / fused |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="tv-bench-") as tmp, single_threaded_blas():
        for i, (out_f, in_f) in enumerate(SHAPES):
            merger = _Merger(make_job(Path(tmp) / f"t{i}.bin", out_f, in_f), _Scratch())
            assert merger.out_dtype.itemsize == 2  # ml_dtypes imported before the timing
            times: dict[bool, list[float]] = {True: [], False: []}
            bits = {}
            for r in range(args.rounds):
                for fused in (True, False) if r % 2 == 0 else (False, True):
                    seconds, bits[fused] = per_block(merger, fused)
                    times[fused].append(seconds)
            assert bits[True] == bits[False], "the fused path changed the bits"
            general, fused_ = (statistics.median(times[k]) for k in (False, True))
            r0, r1 = row_blocks((out_f, in_f))[0]
            print(
                f"| {r1 - r0} x {in_f} | {general * 1e3:.2f} ms | {fused_ * 1e3:.2f} ms "
                f"| {general / fused_:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
