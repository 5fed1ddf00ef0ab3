"""CPU per LoRA product block: one gemm call per row block against merge.apply's calls of
GEMM_ROWS rows (the general path), of about FUSED_ELEMS elements (the fused bf16 path) and
other row counts, on the block shapes of bench.merge_bench's model.

The merge computes delta = B[r0:r1] @ A for blocks of about BLOCK_ELEMS elements, rank 16,
fp32, with OpenBLAS single-threaded (as write_plan runs it). Each round times every way on
every shape in turn, alternating which goes first; the figure is the median over rounds of
the CPU seconds per block. It also checks that every way gives the same bits.

    .venv/bin/python -m bench.gemm_rows_bench [--rank 16] [--rounds 15] [--rows 16 32 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tunevault.merge import apply
from tunevault.merge.blas import single_threaded_blas
from tunevault.merge.plan import BLOCK_ELEMS

Array = np.ndarray[Any, Any]
# (out features, in features) of bench.merge_bench's linear layers: attention and MLP up
# (5632 x 2048) both come in blocks of 2048 x 2048; MLP down in blocks of 744 x 5632.
SHAPES = [(2048, 2048), (2048, 5632)]
REPS = 10  # blocks per timing: a block takes milliseconds, the process clock ticks coarser


def one_call(left: Array, right: Array, out: Array) -> None:
    np.matmul(left, right, out=out)


def rows_of(n: int) -> Callable[[Array, Array, Array], None]:
    def run(left: Array, right: Array, out: Array) -> None:
        saved = apply.GEMM_ROWS
        apply.GEMM_ROWS = n
        try:
            apply._gemm_rows(left, right, out)
        finally:
            apply.GEMM_ROWS = saved

    return run


def fused_chunks(left: Array, right: Array, out: Array) -> None:
    """As merge.apply's fused path cuts a block: about FUSED_ELEMS elements per call."""
    step = max(2, -(-apply.FUSED_ELEMS // right.shape[1]))
    for i0, i1 in apply._row_chunks(left.shape[0], step):
        np.matmul(left[i0:i1], right, out=out[i0:i1])


def per_block(fn: Callable[[Array, Array, Array], None], left: Array, right: Array) -> float:
    out = np.empty((left.shape[0], right.shape[1]), dtype=np.float32)
    fn(left, right, out)  # untimed: first touch of the output
    start = time.process_time()
    for _ in range(REPS):
        fn(left, right, out)
    return (time.process_time() - start) / REPS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--rows", type=int, nargs="+", default=[apply.GEMM_ROWS, 8, 32])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ways: dict[str, Callable[[Array, Array, Array], None]] = {"one call per block": one_call}
    ways.update({f"{n}-row calls": rows_of(n) for n in args.rows})
    ways["fused chunks"] = fused_chunks
    print(f"rank {args.rank}, fp32, OpenBLAS single-threaded, median of {args.rounds} rounds")
    print(
        "| block (rows x cols) | " + " | ".join(ways) + " | one call / 16-row | one call / fused |"
    )
    print("|---" * (len(ways) + 3) + "|")
    with single_threaded_blas():
        for out_f, in_f in SHAPES:
            rows = min(out_f, max(2, BLOCK_ELEMS // in_f))
            b = rng.normal(0, 0.02, (rows, args.rank)).astype(np.float32)
            a = rng.normal(0, 0.02, (args.rank, in_f)).astype(np.float32)
            results = {}
            for name, fn in ways.items():
                out = np.empty((rows, in_f), dtype=np.float32)
                fn(b, a, out)
                results[name] = out
            first = results["one call per block"]
            same = all(
                np.array_equal(first.view(np.uint32), r.view(np.uint32)) for r in results.values()
            )
            times: dict[str, list[float]] = {name: [] for name in ways}
            order = list(ways)
            for i in range(args.rounds):
                for name in order if i % 2 == 0 else reversed(order):
                    times[name].append(per_block(ways[name], b, a))
            med = {name: statistics.median(t) for name, t in times.items()}
            one = med["one call per block"]
            ratio = f"{one / med[f'{apply.GEMM_ROWS}-row calls']:.2f}x"
            ratio += f" | {one / med['fused chunks']:.2f}x"
            cells = " | ".join(f"{med[name] * 1e3:.2f} ms" for name in ways)
            bits = "" if same else " (bits differ)"
            print(f"| {rows} x {in_f} | {cells} | {ratio}{bits} |", flush=True)


if __name__ == "__main__":
    main()
