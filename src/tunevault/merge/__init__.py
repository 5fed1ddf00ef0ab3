"""Streaming LoRA merge: base model + PEFT LoRA adapter -> merged safetensors, matching PEFT.

The merge plans from headers first (every refusal happens before output exists), then streams
tensor by tensor in row blocks, so memory is bounded by a block plus one adapter's factors.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunevault.archive.checksums import BlobHasher
from tunevault.errors import MergeRefused
from tunevault.merge.apply import write_index, write_plan
from tunevault.merge.config import load_settings
from tunevault.merge.files import adapter_tensors, base_tensors, side_files, tied_outputs
from tunevault.merge.plan import Plan, build_plan, resolve_dtype
from tunevault.merge.safetensors_io import Sink, shard_size

__all__ = [
    "MergeRefused",
    "MergeReport",
    "OutputFile",
    "Prepared",
    "merge_lora",
    "merged_digests",
    "prepare",
    "shard_sizes",
    "side_outputs",
    "stream_shards",
]

_TORCH_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
log = logging.getLogger("tunevault.merge")


@dataclass(frozen=True)
class OutputFile:
    """One file of the output with the digests a blob is stored under."""

    path: str  # relative to out_dir, "/"-separated
    size: int
    sha256: str
    xxh3: str


@dataclass(frozen=True)
class MergeReport:
    out_dir: Path
    tensors_merged: int  # LoRA/DoRA deltas, lora_B biases and trainable-token rows applied
    tensors_replaced: int  # taken whole from the adapter (modules_to_save, trained biases, ...)
    tensors_copied: int  # unchanged from the base (possibly cast to `dtype`)
    output_files: tuple[str, ...]
    total_bytes: int
    peak_bytes_planned: int
    dtype: str | None
    untied: tuple[str, ...] = ()  # output embeddings no longer tied to the input ones
    files: tuple[OutputFile, ...] = ()  # with hash_outputs: every output file, by path


def merge_lora(
    base_dir: Path,
    adapter_dir: Path,
    out_dir: Path,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = 5 * 2**30,
    progress: Callable[[int], None] | None = None,
    hash_outputs: bool = False,
) -> MergeReport:
    """Merge the LoRA adapter in `adapter_dir` into the model in `base_dir`, writing `out_dir`;
    `progress` hears the bytes of each output tensor written. With `hash_outputs`, the
    report lists every output file's sha256 and xxh3, the shards' taken as they are written.

    Raises MergeRefused, before anything is written, when the pair cannot be merged exactly.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MergeRefused(f"output directory {out_dir} exists and is not empty")
    prepared = prepare(base_dir, adapter_dir, dtype=dtype, max_shard_bytes=max_shard_bytes)
    plan = prepared.plan
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Written next to out_dir and renamed at the end, so an interrupted merge leaves no output.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    hashers: dict[str, BlobHasher] | None = {} if hash_outputs else None
    try:
        write_plan(plan, tmp, progress, hashers)
        _write_side_files(tmp, prepared.sides, dtype, plan.untied)
        if out_dir.exists():
            out_dir.rmdir()
        tmp.replace(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = tuple(sorted(p.name for p in out_dir.iterdir()))
    digests = () if hashers is None else _output_files(out_dir, hashers)
    jobs = plan.jobs
    return MergeReport(
        out_dir=out_dir,
        tensors_merged=sum(j.kind == "merge" for j in jobs),
        tensors_replaced=sum(j.kind != "merge" and bool(j.adapter_keys) for j in jobs),
        tensors_copied=sum(not j.adapter_keys for j in jobs),
        output_files=files,
        total_bytes=sum(j.out.nbytes for j in jobs),
        peak_bytes_planned=plan.peak_bytes,
        dtype=dtype,
        untied=plan.untied,
        files=digests,
    )


@dataclass(frozen=True)
class Prepared:
    """A merge planned from the headers, every refusal already raised: what the streamed
    merge (`side_outputs`, then `stream_shards`) runs."""

    plan: Plan
    sides: dict[str, Path]  # output path -> source of the files that are not weights
    dtype: str | None

    @property
    def shards(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.plan.shards)


def prepare(
    base_dir: Path,
    adapter_dir: Path,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = 5 * 2**30,
) -> Prepared:
    """Plan the merge of the adapter in `adapter_dir` into the model in `base_dir`; raises
    MergeRefused when the pair cannot be merged exactly."""
    base_dir, adapter_dir = Path(base_dir), Path(adapter_dir)
    settings = load_settings(adapter_dir)
    base = base_tensors(base_dir)
    plan = build_plan(
        base,
        adapter_tensors(adapter_dir),
        settings,
        dtype=dtype,
        max_shard_bytes=max_shard_bytes,
        tied=tied_outputs(base_dir, base),
    )
    return Prepared(plan, side_files(base_dir, adapter_dir), dtype)


class _Discard:
    def write(self, data: bytes | memoryview, /) -> int:
        return len(data)


def shard_sizes(prepared: Prepared) -> dict[str, int]:
    """The size of every shard the merge makes, by name, known from the plan."""
    return {name: shard_size(j.out for j in jobs) for name, jobs in prepared.plan.shards}


def side_outputs(prepared: Prepared, side_dir: Path) -> tuple[OutputFile, ...]:
    """The output's small files (config, tokenizer, the shard index), written to
    `side_dir`, which must not exist, with their digests: all of the output but the
    shards, which `stream_shards` makes."""
    side_dir.mkdir(parents=True)
    write_index(prepared.plan, side_dir)
    _write_side_files(side_dir, prepared.sides, prepared.dtype, prepared.plan.untied)
    return _output_files(side_dir, {})


def merged_digests(
    prepared: Prepared, side_dir: Path, progress: Callable[[int], None] | None = None
) -> tuple[OutputFile, ...]:
    """Every output file's size and digests, by path: the small files as `side_outputs`,
    the shards computed and hashed but not written (`stream_shards` computes them again,
    to the same bytes). For rebuilding an archive with `SHA256SUMS` first."""
    sides = side_outputs(prepared, side_dir)
    hashers: dict[str, BlobHasher] = {}
    write_plan(prepared.plan, None, progress, hashers, _Discard())
    shards = [
        OutputFile(name, size, hashers[name].sha256(), hashers[name].xxh3())
        for name, size in shard_sizes(prepared).items()
    ]
    return tuple(sorted((*shards, *sides), key=lambda f: f.path))


def stream_shards(prepared: Prepared, sink: Sink) -> None:
    """The shards' bytes, one after the other in name order, to `sink`, which must take
    (copy) each buffer before it returns: they are reused."""
    write_plan(prepared.plan, None, sink=sink)


def _output_files(out_dir: Path, hashers: dict[str, BlobHasher]) -> tuple[OutputFile, ...]:
    """The shards' digests as taken while writing; the small side files (config,
    tokenizer, index) are hashed here."""
    out = []
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(out_dir).as_posix()
        h = hashers.get(rel)
        if h is None:
            h = hashers[rel] = BlobHasher()
            h.update(path.read_bytes())
        out.append(OutputFile(rel, path.stat().st_size, h.sha256(), h.xxh3()))
    return tuple(out)


def _write_side_files(
    tmp: Path, sides: dict[str, Path], dtype: str | None, untied: tuple[str, ...]
) -> None:
    """Copy the base's other files, then say in config.json what the merge changed."""
    for name, src in sides.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp / name)
    code = resolve_dtype(dtype)
    if code is not None and (tmp / "config.json").is_file():
        _set_config_dtype(tmp / "config.json", _TORCH_DTYPES[code])
    if untied:
        _untie(tmp / "config.json", untied)


def _untie(path: Path, names: tuple[str, ...]) -> None:
    """As PEFT's merge does when the adapter replaced a tied output embedding."""
    log.warning(
        "input and output embeddings are no longer tied after merging (the adapter replaces "
        "%s); setting tie_word_embeddings=false in config.json",
        ", ".join(names),
    )
    config = json.loads(path.read_text()) if path.is_file() else {}
    config["tie_word_embeddings"] = False
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _set_config_dtype(path: Path, name: str) -> None:
    config = json.loads(path.read_text())
    config["dtype"] = name
    if "torch_dtype" in config:
        config["torch_dtype"] = name
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
