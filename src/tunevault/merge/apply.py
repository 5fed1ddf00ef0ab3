"""Run a plan: stream every output tensor block by block into sharded safetensors files.

Maths (PEFT's merge_and_unload): W' = W + s * B @ A, with W seen as (out, in); for GPT-2 Conv1D
weights and embeddings W is (in, out) and the delta is transposed. DoRA rescales each output
feature of W + s * B @ A to the trained magnitude: W' = m / ||W + s B A|| * (W + s B A).
Everything is computed in fp32 (fp64 for fp64 tensors) and rounded to the output dtype once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from tunevault.archive.checksums import BlobHasher
from tunevault.errors import MergeRefused
from tunevault.merge.blas import single_threaded_blas
from tunevault.merge.plan import Job, LoraOp, Plan, row_blocks, rows_cols
from tunevault.merge.safetensors_io import (
    DTYPES,
    ShardWriter,
    Sink,
    TensorInfo,
    read_all,
    read_rows,
    shard_data_size,
)

Array = np.ndarray[Any, Any]
GEMM_ROWS = 16
FUSED_ELEMS = 1 << 15  # elements per chunk of the fused path: its three fp32 buffers fit in L2
# Float32 bits from which rounding to bfloat16 gives inf (0x7F7F8000 is a tie: to even, up).
_BF16_LIMIT = float(np.array(0x7F7F8000, dtype=np.uint32).view(np.float32))


def write_plan(
    plan: Plan,
    out_dir: Path | None,
    progress: Callable[[int], None] | None = None,
    hashers: dict[str, BlobHasher] | None = None,
    sink: Sink | None = None,
) -> None:
    """Write all shards, and the index when there are several; `progress` hears the bytes
    of each tensor written; `hashers`, when given, gets each shard's digests by file name.
    With a `sink`, the shards' bytes go there one after the other (in name order) instead
    of to files; the index is written to `out_dir` unless it is None."""
    scratch = _Scratch()
    with ThreadPoolExecutor(max_workers=1) as io, single_threaded_blas():
        for filename, jobs in plan.shards:
            hasher = None if hashers is None else hashers.setdefault(filename, BlobHasher())
            path = (out_dir or Path()) / filename
            writer = ShardWriter(path, (j.out for j in jobs), hasher, sink)
            try:
                for job in jobs:
                    writer.begin(job.out.name)
                    _run(job, writer, scratch, io)
                    writer.end()
                    if progress is not None:
                        progress(job.out.nbytes)
            except BaseException:
                writer.abort()  # the caller removes the partial output
                raise
            writer.close()
    if out_dir is not None:
        write_index(plan, out_dir)


def write_index(plan: Plan, out_dir: Path) -> None:
    """`model.safetensors.index.json`, when there are several shards: known from the plan,
    so a streamed merge writes it before the shards are made."""
    if len(plan.shards) < 2:
        return
    weight_map = {j.out.name: filename for filename, jobs in plan.shards for j in jobs}
    total = sum(shard_data_size(j.out for j in jobs) for _, jobs in plan.shards)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _run(job: Job, writer: ShardWriter, scratch: _Scratch, io: ThreadPoolExecutor) -> None:
    """Compute block i+1 while block i is being written: two output buffers take turns."""
    if job.kind == "copy":
        writer.copy(job.source)
        return
    cols = rows_cols(job.source.shape)[1]
    merger = _Merger(job, scratch) if job.kind == "merge" else None
    pending: Future[None] | None = None
    try:
        for i, (r0, r1) in enumerate(row_blocks(job.source.shape)):
            slot = f"out{i % 2}"
            if merger is None:  # a dtype cast
                raw = read_rows(job.source, r0, r1, scratch.get("raw", (r1 - r0, cols), job.source))
                out = scratch.cast(slot, raw, DTYPES[job.out.dtype])
            else:
                out = merger.block(r0, r1, slot)
            if pending is not None:
                pending.result()
            pending = io.submit(writer.write, out)
    finally:
        if pending is not None:
            pending.result()


class _Scratch:
    """Block buffers reused across blocks and tensors: fresh arrays for every block would
    fault in new pages each time."""

    def __init__(self) -> None:
        self._bufs: dict[str, Array] = {}

    def get(self, slot: str, shape: tuple[int, ...], dtype: Any) -> Array:
        dt = dtype.np_dtype if isinstance(dtype, TensorInfo) else np.dtype(dtype)
        n = math.prod(shape) * dt.itemsize
        buf = self._bufs.get(slot)
        if buf is None or buf.nbytes < n:
            buf = self._bufs[slot] = np.empty(n, dtype=np.uint8)
        return buf[:n].view(dt).reshape(shape)

    def cast(self, slot: str, src: Array, dtype: Any) -> Array:
        out = self.get(slot, src.shape, dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked by the caller
            np.copyto(out, src, casting="unsafe")
        return out


class _Merger:
    """Produces the merged rows [r0, r1) of one tensor."""

    def __init__(self, job: Job, scratch: _Scratch) -> None:
        self.job = job
        self.scratch = scratch
        self.cols = rows_cols(job.source.shape)[1]
        wide = job.source.dtype == "F64" and job.out.dtype == "F64"
        self.compute = np.dtype(np.float64 if wide else np.float32)
        self.lora = job.lora
        self.scale = self.compute.type(1.0)
        if self.lora is not None:
            self.a = read_all(self.lora.a).astype(self.compute)
            self.b = read_all(self.lora.b).astype(self.compute)
            self.scale = self.compute.type(self.lora.scale)
            if math.frexp(self.lora.scale)[0] == 0.5:
                # A power-of-two scale commutes exactly with the matmul: fold it into B once.
                self.b *= self.scale
                self.scale = self.compute.type(1.0)
        self.dora: Array | None = None
        self.fused = (
            self.lora is not None
            and self.lora.layout == "out_in"
            and self.lora.magnitude is None
            and not self.lora.round_delta
            and job.source.dtype == job.out.dtype == "BF16"
            and job.bias_delta is None
            and job.token_rows is None
        )
        if self.lora is not None and self.lora.magnitude is not None:
            self.dora = read_all(self.lora.magnitude).astype(self.compute)
            if self.lora.layout == "in_out":
                # Output features are columns here, so their norms need a first pass over all rows.
                self.dora = self.dora / self._column_norms(self.lora)

    @cached_property
    def out_dtype(self) -> np.dtype[Any]:
        return DTYPES[self.job.out.dtype]  # on first use: the fused path needs no ml_dtypes

    def _base(self, r0: int, r1: int) -> Array:
        """Source rows in the compute dtype, first rounded to the output dtype as PEFT would see
        them after loading the base model in that dtype."""
        shape = (r1 - r0, self.cols)
        raw = read_rows(self.job.source, r0, r1, self.scratch.get("raw", shape, self.job.source))
        if raw.dtype != self.out_dtype:
            raw = self.scratch.cast("round", raw, self.out_dtype)
        return self.scratch.cast("w", raw, self.compute)

    def _add_delta(self, w: Array, lora: LoraOp, r0: int, r1: int) -> None:
        delta = self.scratch.get("delta", w.shape, self.compute)
        if lora.layout == "out_in":
            _gemm_rows(self.b[r0:r1], self.a, delta)
        else:  # rows of W are columns of B @ A: take A's columns and transpose
            _gemm_rows(self.a[:, r0:r1].T, self.b.T, delta)
        if self.scale != 1:
            delta *= self.scale
        if lora.round_delta:
            delta = self.scratch.cast(
                "delta", self.scratch.cast("round", delta, self.out_dtype), self.compute
            )
        w += delta

    def _column_norms(self, lora: LoraOp) -> Array:
        sq = np.zeros(self.cols, dtype=np.float64)
        for r0, r1 in row_blocks(self.job.source.shape):
            w = self._base(r0, r1)
            self._add_delta(w, lora, r0, r1)
            sq += np.einsum("ij,ij->j", w, w, dtype=np.float64)
        return np.sqrt(sq).astype(self.compute)

    def _fused(self, r0: int, r1: int, slot: str) -> Array | None:
        """The common case, a plain LoRA on a bf16 base: widen, gemm, add and round a chunk
        of rows at a time while it is in cache, widening and rounding (to nearest even) with
        integer ops on the bits instead of ml_dtypes' per-element casts (the same bits, a
        quarter less CPU per block: BENCHMARKS.md). None when a value is not finite or would
        round to inf: the general path then gives the exact result, or the refusal."""
        assert self.lora is not None
        bits_in = read_rows(
            self.job.source, r0, r1, self.scratch.get("raw", (r1 - r0, self.cols), np.uint16)
        )
        bits_out = self.scratch.get(slot, bits_in.shape, np.uint16)
        step = max(2, -(-FUSED_ELEMS // self.cols))  # never one row: see _gemm_rows
        shape = (step + 1, self.cols)  # the last chunk may take a lone last row
        w_buf, d_buf = (self.scratch.get(k, shape, np.float32) for k in ("w", "delta"))
        u_buf = self.scratch.get("bits", shape, np.uint32)
        for i0, i1 in _row_chunks(r1 - r0, step):
            w, d, u = w_buf[: i1 - i0], d_buf[: i1 - i0], u_buf[: i1 - i0]
            np.left_shift(bits_in[i0:i1], 16, out=w.view(np.uint32), dtype=np.uint32)
            np.matmul(self.b[r0 + i0 : r0 + i1], self.a, out=d)
            if self.scale != 1:
                d *= self.scale
            w += d
            if not (w.min() > -_BF16_LIMIT and w.max() < _BF16_LIMIT):  # NaN fails both
                return None
            wu = w.view(np.uint32)  # round: add 0x7FFF plus the lowest kept bit, keep the top half
            np.bitwise_and(np.right_shift(wu, 16, out=u), 1, out=u)
            np.add(np.add(u, 0x7FFF, out=u), wu, out=u)
            np.right_shift(u, 16, out=u)
            np.copyto(bits_out[i0:i1], u, casting="unsafe")
        return bits_out

    def block(self, r0: int, r1: int, slot: str) -> Array:
        job = self.job
        out = self._fused(r0, r1, slot) if self.fused else None
        if out is not None:
            return out.reshape((r1 - r0, *job.out.shape[1:]))
        w = self._base(r0, r1)
        if self.lora is not None:
            self._add_delta(w, self.lora, r0, r1)
            if self.dora is not None and self.lora.layout == "out_in":
                norms = np.sqrt(np.einsum("ij,ij->i", w, w, dtype=np.float64)).astype(self.compute)
                w *= (self.dora[r0:r1] / norms)[:, None]
            elif self.dora is not None:
                w *= self.dora[None, :]
        if job.bias_delta is not None:
            info, scale = job.bias_delta
            w[:, 0] += read_all(info)[r0:r1].astype(self.compute) * self.compute.type(scale)
        if job.token_rows is not None:
            info, indices = job.token_rows
            for i, row in enumerate(indices):
                if r0 <= row < r1:
                    delta = read_rows(info, i, i + 1)[0]
                    w[row - r0] = delta.astype(self.out_dtype).astype(self.compute)
        out = self.scratch.cast(slot, w, self.out_dtype)
        if not _all_finite(out, self.scratch) and _all_finite(self._base(r0, r1), self.scratch):
            raise MergeRefused(f"merged tensor {job.out.name!r} is not finite in {job.out.dtype}")
        return out.reshape((r1 - r0, *job.out.shape[1:]))


def _gemm_rows(left: Array, right: Array, out: Array) -> None:
    """out = left @ right, GEMM_ROWS rows per call: with the LoRA rank as inner dimension
    the product is memory-bound, and a product this small stays in cache while BLAS writes
    it (1.4-1.5x faster than one call per 2048-column block, no faster on 5632 columns:
    bench.gemm_rows_bench). Never one row alone, unless the block is: numpy would hand it
    to gemv, which rounds otherwise."""
    for i0, i1 in _row_chunks(left.shape[0], GEMM_ROWS):
        np.matmul(left[i0:i1], right, out=out[i0:i1])


def _row_chunks(rows: int, step: int) -> list[tuple[int, int]]:
    """[i0, i1) ranges of `step` rows; a lone last row joins the chunk before it."""
    starts = list(range(0, rows, step))
    if len(starts) > 1 and rows - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, [*starts[1:], rows], strict=True))


def _all_finite(a: Array, scratch: _Scratch) -> bool:
    # The check runs on every block: for 2-byte floats it tests the exponent bits (all ones:
    # inf or NaN) with integer ops on a uint16 view instead of going through ml_dtypes' isfinite,
    # in reused buffers (fresh ones would fault in new pages for every block).
    mask = {"bfloat16": 0x7F80, "float16": 0x7C00}.get(a.dtype.name)
    if mask is None:
        return bool(np.isfinite(a).all())
    bits = np.bitwise_and(a.view(np.uint16), mask, out=scratch.get("bits", a.shape, np.uint16))
    return not np.equal(bits, mask, out=scratch.get("inf", a.shape, np.bool_)).any()
