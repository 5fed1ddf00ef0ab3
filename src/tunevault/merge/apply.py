"""Run a plan: stream every output tensor block by block into sharded safetensors files.

Maths (PEFT's merge_and_unload): W' = W + s * B @ A, with W seen as (out, in); for GPT-2 Conv1D
weights and embeddings W is (in, out) and the delta is transposed. DoRA rescales each output
feature of W + s * B @ A to the trained magnitude: W' = m / ||W + s B A|| * (W + s B A).
Everything is computed in fp32 (fp64 for fp64 tensors) and rounded to the output dtype once.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tunevault.errors import MergeRefused
from tunevault.merge.plan import Job, LoraOp, Plan, block_rows, rows_cols
from tunevault.merge.safetensors_io import DTYPES, ShardWriter, read_all, read_rows

Array = np.ndarray[Any, Any]


def write_plan(plan: Plan, out_dir: Path) -> Counter[str]:
    """Write all shards (and the index when there are several); return the adapter keys used."""
    used: Counter[str] = Counter()
    weight_map: dict[str, str] = {}
    total = 0
    for filename, jobs in plan.shards:
        writer = ShardWriter(out_dir / filename, (j.out for j in jobs))
        try:
            for job in jobs:
                writer.begin(job.out.name)
                _run(job, writer)
                writer.end()
                used.update(job.adapter_keys)
                weight_map[job.out.name] = filename
        except BaseException:
            writer.file.close()  # the caller removes the partial output
            raise
        writer.close()
        total += writer.data_bytes
    if len(plan.shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return used


def _run(job: Job, writer: ShardWriter) -> None:
    if job.kind == "copy":
        writer.copy(job.source)
        return
    out_dtype = DTYPES[job.out.dtype]
    rows, _ = rows_cols(job.source.shape)
    step = block_rows(job.source.shape)
    if job.kind == "cast":
        for r0 in range(0, rows, step):
            writer.write(read_rows(job.source, r0, min(rows, r0 + step)).astype(out_dtype))
        return
    merger = _Merger(job)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        writer.write(merger.block(r0, r1))


class _Merger:
    """Produces the merged rows [r0, r1) of one tensor."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.out_dtype = DTYPES[job.out.dtype]
        wide = job.source.dtype == "F64" and job.out.dtype == "F64"
        self.compute = np.dtype(np.float64 if wide else np.float32)
        self.lora = job.lora
        if self.lora is not None:
            self.a = read_all(self.lora.a).astype(self.compute)
            self.b = read_all(self.lora.b).astype(self.compute)
            self.scale = self.compute.type(self.lora.scale)
        self.dora: Array | None = None
        if self.lora is not None and self.lora.magnitude is not None:
            self.dora = read_all(self.lora.magnitude).astype(self.compute)
            if self.lora.layout == "in_out":
                # Output features are columns here, so their norms need a first pass over all rows.
                self.dora = self.dora / self._column_norms(self.lora)

    def _base(self, r0: int, r1: int) -> Array:
        """Source rows in the compute dtype, first rounded to the output dtype as PEFT would see
        them after loading the base model in that dtype."""
        raw = read_rows(self.job.source, r0, r1)
        if raw.dtype != self.out_dtype:
            raw = raw.astype(self.out_dtype)
        return raw.astype(self.compute)

    def _delta(self, lora: LoraOp, r0: int, r1: int) -> Array:
        # in_out: rows of W are columns of B @ A, so take A's columns and transpose.
        delta = self.b[r0:r1] @ self.a if lora.layout == "out_in" else self.a[:, r0:r1].T @ self.b.T
        delta *= self.scale
        if lora.round_delta:
            return delta.astype(self.out_dtype).astype(self.compute)
        return delta

    def _column_norms(self, lora: LoraOp) -> Array:
        rows, cols = rows_cols(self.job.source.shape)
        sq = np.zeros(cols, dtype=np.float64)
        step = block_rows(self.job.source.shape)
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            w = self._base(r0, r1)
            w += self._delta(lora, r0, r1)
            sq += np.einsum("ij,ij->j", w, w, dtype=np.float64)
        return np.sqrt(sq).astype(self.compute)

    def block(self, r0: int, r1: int) -> Array:
        job = self.job
        w = self._base(r0, r1)
        finite = bool(np.isfinite(w).all())
        if self.lora is not None:
            w += self._delta(self.lora, r0, r1)
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
        with np.errstate(over="ignore"):  # overflow is reported below, by name
            out = w.astype(self.out_dtype)
        if finite and not np.isfinite(out).all():
            raise MergeRefused(f"merged tensor {job.out.name!r} is not finite in {job.out.dtype}")
        return out.reshape((r1 - r0, *job.out.shape[1:]))
