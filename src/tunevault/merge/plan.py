"""Plan a merge from headers alone: map every adapter tensor to a base tensor and check it fits.

Nothing here reads tensor data, so every refusal happens before a byte of output is written.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from tunevault.errors import MergeRefused
from tunevault.merge.config import LoraSettings
from tunevault.merge.safetensors_io import ITEMSIZE, MERGEABLE, OutSpec, TensorInfo

PREFIX = "base_model.model."
BLOCK_ELEMS = 4 * 2**20  # rows are processed in blocks of about this many elements
_DTYPE_NAMES = {
    "float32": "F32",
    "fp32": "F32",
    "float16": "F16",
    "fp16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "bf16": "BF16",
}
# Adapter key suffixes that carry LoRA factors, per module.
_FACTOR = re.compile(
    r"^(?P<m>.+)\.(?P<kind>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_embedding_A"
    r"|lora_embedding_B|lora_magnitude_vector|token_adapter\.trainable_tokens_delta)$"
)

# "out_in": W is (out, in) like nn.Linear, delta = B @ A.
# "in_out": W is (in, out) like GPT-2 Conv1D or (vocab, dim) for an embedding, delta = (B @ A).T.
Layout = Literal["out_in", "in_out"]


@dataclass(frozen=True)
class LoraOp:
    a: TensorInfo
    b: TensorInfo
    scale: float
    layout: Layout
    magnitude: TensorInfo | None  # DoRA
    # PEFT's Embedding.merge casts the delta to the weight dtype before adding it, so a vanilla
    # embedding delta is rounded twice; Linear adds the fp32 delta and rounds once.
    round_delta: bool = False


@dataclass(frozen=True)
class Job:
    """How one output tensor is produced."""

    out: OutSpec
    source: TensorInfo  # the base tensor, or the adapter's full replacement of it
    lora: LoraOp | None = None
    bias_delta: tuple[TensorInfo, float] | None = None  # lora_B.bias and its scale
    token_rows: tuple[TensorInfo, tuple[int, ...]] | None = None
    adapter_keys: tuple[str, ...] = ()

    @property
    def kind(self) -> Literal["copy", "cast", "merge"]:
        if self.lora or self.bias_delta or self.token_rows:
            return "merge"
        return "copy" if self.out.dtype == self.source.dtype else "cast"


@dataclass(frozen=True)
class Plan:
    jobs: tuple[Job, ...]
    shards: tuple[tuple[str, tuple[Job, ...]], ...]
    peak_bytes: int
    untied: tuple[str, ...] = ()  # output embeddings the adapter replaced on a tied base


def resolve_dtype(dtype: str | None) -> str | None:
    if dtype is None:
        return None
    code = _DTYPE_NAMES.get(dtype.lower())
    if code is None:
        raise MergeRefused(f"dtype {dtype!r} is not one of {sorted(_DTYPE_NAMES)}")
    return code


def build_plan(
    base: dict[str, TensorInfo],
    adapter: dict[str, TensorInfo],
    settings: LoraSettings,
    *,
    dtype: str | None,
    max_shard_bytes: int,
    tied: Mapping[str, str] | None = None,
) -> Plan:
    """`tied` maps an output embedding the base leaves out (tied) to the tensor it shares."""
    out_code = resolve_dtype(dtype)
    if max_shard_bytes <= 0:
        raise MergeRefused("max_shard_bytes must be positive")
    modules: dict[str, dict[str, TensorInfo]] = defaultdict(dict)
    replacements: dict[str, TensorInfo] = {}
    for key, info in adapter.items():
        if not key.startswith(PREFIX):
            raise MergeRefused(f"adapter tensor {key!r} does not start with {PREFIX!r}")
        rest = key.removeprefix(PREFIX)
        match = _FACTOR.match(rest)
        if match:
            modules[match["m"]][match["kind"]] = info
            continue
        if ".lora_" in rest:
            raise MergeRefused(f"adapter tensor {key!r} is a LoRA variant the merge does not know")
        target = rest.replace(".base_layer.", ".")
        if target in replacements:
            raise MergeRefused(f"adapter has two full copies of base tensor {target!r}")
        replacements[target] = info

    jobs: dict[str, Job] = {}
    for name, info in base.items():
        jobs[name] = Job(_out_spec(info, out_code), info)
    # Base file order keeps reads sequential; an untied output follows the tensor it shared.
    where = {name: (str(info.path), info.start) for name, info in base.items()}
    untied = _plan_replacements(replacements, base, jobs, where, tied or {}, out_code)

    lora_modules: set[str] = set()
    for module, keys in modules.items():
        _plan_module(module, keys, settings, base, jobs, lora_modules)
    _check_untouched_targets(base, settings, lora_modules)
    _check_fan_in_fan_out(jobs, settings)

    ordered = tuple(sorted(jobs.values(), key=lambda j: where[j.out.name]))
    # Each adapter tensor must be applied exactly once: a dropped one would silently lose part
    # of the adapter, a doubled one would add its delta twice.
    used = Counter(k for j in ordered for k in j.adapter_keys)
    missing = adapter.keys() - used.keys()
    if missing:
        raise MergeRefused(f"adapter tensors the plan does not use: {sorted(missing)[:5]}")
    twice = sorted(k for k, n in used.items() if n > 1)
    if twice:
        raise RuntimeError(f"plan applies adapter tensors more than once: {twice[:5]}")
    return Plan(
        jobs=ordered,
        shards=_shard(ordered, max_shard_bytes),
        peak_bytes=max((_peak(j) for j in ordered), default=0),
        untied=tuple(untied),
    )


def _plan_replacements(
    replacements: dict[str, TensorInfo],
    base: dict[str, TensorInfo],
    jobs: dict[str, Job],
    where: dict[str, tuple[str, int]],
    tied: Mapping[str, str],
    out_code: str | None,
) -> list[str]:
    """Full tensors the adapter replaces; returns the tied outputs it unties."""
    untied = []
    for target, info in replacements.items():
        shared = tied.get(target) if target not in base else None
        if shared is not None:  # PEFT unties it: the adapter's copy, the input one unchanged
            _check_replacement(target, info, base[shared])
            spec = _out_spec(base[shared], out_code)
            out = OutSpec(target, spec.dtype, spec.shape)
            jobs[target] = Job(out, info, adapter_keys=(info.name,))
            where[target] = where[shared]
            untied.append(target)
            continue
        _check_replacement(target, info, base.get(target))
        old = jobs[target]
        jobs[target] = Job(old.out, info, adapter_keys=(info.name,))
    return untied


def _out_spec(info: TensorInfo, out_code: str | None) -> OutSpec:
    # fp8 weights are left as they are: without their scale tensors a cast would be wrong.
    cast = out_code is not None and info.dtype in MERGEABLE
    return OutSpec(info.name, out_code if out_code and cast else info.dtype, info.shape)


def _check_replacement(target: str, info: TensorInfo, base: TensorInfo | None) -> None:
    if base is None:
        raise MergeRefused(f"adapter tensor {info.name!r} replaces {target!r}, absent from base")
    if info.shape != base.shape:
        raise MergeRefused(
            f"adapter tensor {info.name!r} has shape {list(info.shape)} but base {target!r} has "
            f"{list(base.shape)} (a resized vocabulary is not supported)"
        )
    if (info.dtype in MERGEABLE) != (base.dtype in MERGEABLE) or (
        info.dtype not in MERGEABLE and info.dtype != base.dtype
    ):
        raise MergeRefused(
            f"adapter tensor {info.name!r} is {info.dtype}, base {target!r} is {base.dtype}"
        )


def _plan_module(
    module: str,
    keys: dict[str, TensorInfo],
    settings: LoraSettings,
    base: dict[str, TensorInfo],
    jobs: dict[str, Job],
    lora_modules: set[str],
) -> None:
    wname = f"{module}.weight"
    weight = base.get(wname)
    if weight is None:
        first = next(iter(keys.values())).name
        raise MergeRefused(f"adapter tensor {first!r} targets {wname!r}, which the base lacks")
    for info in keys.values():
        if info.dtype not in MERGEABLE:
            raise MergeRefused(f"adapter tensor {info.name!r} has dtype {info.dtype}, not a float")
    job = jobs[wname]
    source = job.source
    if source.dtype not in MERGEABLE:
        raise MergeRefused(f"base tensor {wname!r} has dtype {source.dtype}; cannot merge into it")
    names = tuple(i.name for k, i in keys.items() if k != "lora_B.bias")

    if "token_adapter.trainable_tokens_delta" in keys:
        if len(keys) > 1:
            raise MergeRefused(f"{module}: trainable tokens and LoRA on the same module")
        delta = keys["token_adapter.trainable_tokens_delta"]
        rows = _token_indices(module, settings, weight, delta)
        keys_used = job.adapter_keys + names
        jobs[wname] = Job(job.out, source, token_rows=(delta, rows), adapter_keys=keys_used)
        return

    a, b, embedding = _lora_factors(module, keys, settings)
    layout = _layout(module, weight, a, b, settings, embedding)
    out_dim = weight.shape[0] if layout == "out_in" else weight.shape[1]
    magnitude = keys.get("lora_magnitude_vector")
    if settings.use_dora != (magnitude is not None):
        raise MergeRefused(
            f"{module}: use_dora={settings.use_dora} but the adapter "
            f"{'lacks' if settings.use_dora else 'has'} lora_magnitude_vector"
        )
    if magnitude is not None and magnitude.shape != (out_dim,):
        raise MergeRefused(f"{module}: DoRA magnitude {list(magnitude.shape)} != [{out_dim}]")
    scale = settings.scaling(module)
    lora = LoraOp(a, b, scale, layout, magnitude, round_delta=embedding and magnitude is None)
    jobs[wname] = Job(job.out, source, lora=lora, adapter_keys=job.adapter_keys + names)
    lora_modules.add(module)
    _plan_lora_bias(module, keys, settings, jobs, out_dim, scale)


def _lora_factors(
    module: str, keys: dict[str, TensorInfo], settings: LoraSettings
) -> tuple[TensorInfo, TensorInfo, bool]:
    """The module's lora_A and lora_B (or embedding pair), checked against the config."""
    embedding = "lora_embedding_A" in keys or "lora_embedding_B" in keys
    a = keys.get("lora_embedding_A" if embedding else "lora_A.weight")
    b = keys.get("lora_embedding_B" if embedding else "lora_B.weight")
    mixed = embedding and ("lora_A.weight" in keys or "lora_B.weight" in keys)
    if a is None or b is None or mixed:
        raise MergeRefused(f"{module}: need one lora_A and one lora_B, got {sorted(keys)}")
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise MergeRefused(f"{module}: LoRA on convolutions ({len(a.shape)}-d factors) unsupported")
    if not settings.targets(module):
        raise MergeRefused(
            f"adapter has LoRA weights for {module!r}, which target_modules/exclude_modules/"
            "layers_to_transform do not select; PEFT would not load them"
        )
    r, _ = settings.rank_and_alpha(module)
    if a.shape[0] != r or b.shape[1] != r:
        raise MergeRefused(
            f"{module}: rank from adapter_config.json is {r} but lora_A is {list(a.shape)} and "
            f"lora_B is {list(b.shape)}"
        )
    return a, b, embedding


def _plan_lora_bias(
    module: str,
    keys: dict[str, TensorInfo],
    settings: LoraSettings,
    jobs: dict[str, Job],
    out_dim: int,
    scale: float,
) -> None:
    """lora_bias: PEFT adds scale * lora_B.bias to the base bias."""
    lb = keys.get("lora_B.bias")
    if lb is None:
        return
    bname = f"{module}.bias"
    if not settings.lora_bias:
        raise MergeRefused(f"{module}: adapter has lora_B.bias but lora_bias is false")
    if bname not in jobs:
        raise MergeRefused(f"{module}: lora_bias needs base tensor {bname!r}, which the base lacks")
    bjob = jobs[bname]
    if bjob.source.dtype not in MERGEABLE or not bjob.out.shape == lb.shape == (out_dim,):
        raise MergeRefused(f"{module}: lora_B.bias {list(lb.shape)} does not fit {bname!r}")
    jobs[bname] = Job(
        bjob.out, bjob.source, bias_delta=(lb, scale), adapter_keys=(*bjob.adapter_keys, lb.name)
    )


def _layout(
    module: str, weight: TensorInfo, a: TensorInfo, b: TensorInfo, s: LoraSettings, embedding: bool
) -> Layout:
    (out_f, _), (_, in_f) = b.shape, a.shape
    shape = weight.shape
    if embedding:
        if shape != (in_f, out_f):
            raise MergeRefused(
                f"{module}: embedding {list(shape)} does not fit lora_embedding_A {list(a.shape)} "
                f"and lora_embedding_B {list(b.shape)}"
            )
        return "in_out"
    if shape == (out_f, in_f) and shape == (in_f, out_f):
        return "in_out" if s.fan_in_fan_out else "out_in"
    if shape == (out_f, in_f):
        return "out_in"
    if shape == (in_f, out_f):
        return "in_out"
    raise MergeRefused(
        f"{module}: base weight {list(shape)} does not fit lora_A {list(a.shape)} and "
        f"lora_B {list(b.shape)}"
    )


def _check_fan_in_fan_out(jobs: dict[str, Job], s: LoraSettings) -> None:
    """Square weights take their orientation from fan_in_fan_out; PEFT flips that flag when a
    module's type contradicts it, so a contradicted flag leaves square weights ambiguous."""
    square, contradicting = [], []
    for j in jobs.values():
        if j.lora is None or j.lora.a.name.endswith("lora_embedding_A"):
            continue
        if j.out.shape[0] == j.out.shape[1]:
            square.append(j.out.name)
        elif (j.lora.layout == "in_out") != s.fan_in_fan_out:
            contradicting.append(j.out.name)
    if square and contradicting:
        raise MergeRefused(
            f"fan_in_fan_out={s.fan_in_fan_out} is contradicted by {contradicting[0]!r}, so the "
            f"orientation of square weights such as {square[0]!r} is ambiguous"
        )


def _check_untouched_targets(
    base: dict[str, TensorInfo], s: LoraSettings, lora_modules: set[str]
) -> None:
    """A module that target_modules selects but the adapter has no weights for means a truncated
    or mismatched adapter; "all-linear" cannot be checked from headers, so it is skipped."""
    if s.target_modules is None or s.target_modules == "all-linear":
        return
    for name, info in base.items():
        module = name.removesuffix(".weight")
        if module == name or len(info.shape) < 2 or module in lora_modules:
            continue
        if not s.targets(module):
            continue
        raise MergeRefused(
            f"target_modules selects {module!r} but the adapter has no LoRA weights for it"
        )


def _token_indices(
    module: str, s: LoraSettings, weight: TensorInfo, delta: TensorInfo
) -> tuple[int, ...]:
    spec = s.trainable_token_indices
    if spec is None:
        raise MergeRefused(f"{module}: trainable token deltas without trainable_token_indices")
    if isinstance(spec, dict):
        found = [v for k, v in spec.items() if module == k or module.endswith(f".{k}")]
        if len(found) != 1:
            raise MergeRefused(f"{module}: trainable_token_indices does not name it exactly once")
        spec = found[0]
    rows = tuple(int(i) for i in spec)
    if len(weight.shape) != 2 or delta.shape != (len(rows), weight.shape[1]):
        raise MergeRefused(
            f"{module}: trainable token delta {list(delta.shape)} does not fit {len(rows)} indices "
            f"of {list(weight.shape)}"
        )
    if len(set(rows)) != len(rows) or any(not 0 <= i < weight.shape[0] for i in rows):
        raise MergeRefused(f"{module}: trainable_token_indices must be distinct rows of the weight")
    return rows


def _shard(jobs: tuple[Job, ...], limit: int) -> tuple[tuple[str, tuple[Job, ...]], ...]:
    groups: list[list[Job]] = [[]]
    size = 0
    for j in jobs:
        if groups[-1] and size + j.out.nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(j)
        size += j.out.nbytes
    n = len(groups)
    if n == 1:
        return (("model.safetensors", tuple(groups[0])),)
    names = (f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1))
    return tuple((name, tuple(g)) for name, g in zip(names, groups, strict=True))


def rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    """A tensor seen as 2-D: first dimension by the product of the rest."""
    return (shape[0], math.prod(shape[1:])) if shape else (1, 1)


def row_blocks(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Row ranges [r0, r1) of about BLOCK_ELEMS elements covering a tensor seen as 2-D.

    No block is a single row unless the tensor is: numpy hands a one-row matmul to BLAS's
    gemv, which rounds differently from the gemm of PEFT's merge (and of the other blocks).
    """
    rows, cols = rows_cols(shape)
    step = max(2, BLOCK_ELEMS // max(1, cols))
    starts = list(range(0, rows, step))
    if len(starts) > 1 and rows - starts[-1] == 1:
        starts.pop()  # the block before takes the lone last row
    ends = [*starts[1:], rows] if starts else []
    return list(zip(starts, ends, strict=True))


def _peak(job: Job) -> int:
    """Bytes a job holds at once: one block as read, two output blocks (one being written while
    the next is computed), for merges a fp32 working block, a fp32 delta, a block rounded to
    the output dtype and the finite check's bits and flags, plus the whole adapter factors in
    fp32. Copies go through the kernel."""
    if job.kind == "copy":
        return 0
    cols = rows_cols(job.source.shape)[1]
    elems = max((r1 - r0 for r0, r1 in row_blocks(job.source.shape)), default=0) * cols
    out_size = ITEMSIZE[job.out.dtype]
    per_elem = ITEMSIZE[job.source.dtype] + 2 * out_size
    if job.kind == "merge":
        per_elem += 4 + 4 + out_size + 2 + 1
    small = 0
    if job.lora:
        small += (job.lora.a.numel + job.lora.b.numel) * 4 + (cols * 8 if job.lora.magnitude else 0)
    for extra in (job.bias_delta, job.token_rows):
        if extra:
            small += extra[0].numel * 4
    return elems * per_elem + small
