"""Which files of a model or adapter directory hold weights, config and tokenizer."""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path

from tunevault.errors import MergeRefused
from tunevault.merge.safetensors_io import TensorInfo, read_header

INDEX_NAME = "model.safetensors.index.json"
# The base's own weights, in any format: the merge writes the merged ones instead.
WEIGHT_FILES = (
    "*.safetensors",
    INDEX_NAME,
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "tf_model*.h5",
    "flax_model*.msgpack",
    "rust_model.ot",
    "*.gguf",
)
# Exports of the unmerged weights (sentence-transformers repositories carry them).
EXPORT_DIRS = ("onnx", "openvino")
# A tokenizer is a set of files that must agree with each other, so it is taken whole from one side.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
    "chat_template.json",
)


def base_tensors(base_dir: Path) -> dict[str, TensorInfo]:
    """Every tensor of the base model, from model.safetensors or the sharded index."""
    index = base_dir / INDEX_NAME
    single = base_dir / "model.safetensors"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted({str(f) for f in weight_map.values()})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise MergeRefused(f"base model: malformed {INDEX_NAME}: {e}") from e
        tensors: dict[str, TensorInfo] = {}
        for name in files:
            shard = base_dir / name
            if Path(name).name != name or not shard.is_file():
                raise MergeRefused(f"base model: shard {name!r} named in {INDEX_NAME} is missing")
            for key, info in read_header(shard).items():
                if key in tensors:
                    raise MergeRefused(f"base model: tensor {key!r} appears in two shards")
                tensors[key] = info
        for key, name in weight_map.items():
            if key not in tensors or tensors[key].path.name != name:
                raise MergeRefused(f"base model: {INDEX_NAME} misplaces {key!r} in {name}")
        return tensors
    if single.is_file():
        return read_header(single)
    legacy = [p.name for p in base_dir.glob("pytorch_model*.bin")]
    hint = f" (found {legacy[0]}: pickled weights are not supported)" if legacy else ""
    raise MergeRefused(f"base model: no model.safetensors or {INDEX_NAME} in {base_dir}{hint}")


# Input embeddings an output embedding (`lm_head`) is tied to, by architecture.
INPUT_EMBEDDINGS = (
    "embed_tokens.weight",
    "wte.weight",
    "word_embeddings.weight",
    "embed_in.weight",
    "shared.weight",
)


def tied_outputs(base_dir: Path, base: dict[str, TensorInfo]) -> dict[str, str]:
    """`{"lm_head.weight": <input embedding>}` for a base that ties them (and so stores only
    the input one); empty when its config unties them or the pair is not recognised."""
    config_path = base_dir / "config.json"
    try:
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    except ValueError as e:
        raise MergeRefused(f"base model: malformed config.json: {e}") from e
    if "lm_head.weight" in base or config.get("tie_word_embeddings") is False:
        return {}
    inputs = [n for n in base if n.endswith(INPUT_EMBEDDINGS)]
    return {"lm_head.weight": inputs[0]} if len(inputs) == 1 else {}


def adapter_tensors(adapter_dir: Path) -> dict[str, TensorInfo]:
    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        hint = " (adapter_model.bin is pickled and not supported)"
        legacy = (adapter_dir / "adapter_model.bin").is_file()
        raise MergeRefused(f"adapter: no adapter_model.safetensors in {adapter_dir}{hint * legacy}")
    return read_header(path)


def side_files(base_dir: Path, adapter_dir: Path) -> dict[str, Path]:
    """Output path -> source: every base file but its weights (config, generation config,
    a sentence-transformers pipeline: modules.json, 1_Pooling/, ...), with the adapter's
    tokenizer instead of the base's if the adapter has one."""
    adapter_tok = {n: adapter_dir / n for n in TOKENIZER_FILES if (adapter_dir / n).is_file()}
    replaced = set(TOKENIZER_FILES) if adapter_tok else set()
    out: dict[str, Path] = {}
    for path in sorted(base_dir.rglob("*")):
        rel = path.relative_to(base_dir)
        if path.is_file() and not _holds_weights(rel) and rel.as_posix() not in replaced:
            out[rel.as_posix()] = path
    out.update(adapter_tok)
    return out


def _holds_weights(rel: Path) -> bool:
    if rel.parts[0] in EXPORT_DIRS or rel.suffix == ".onnx":
        return True
    return len(rel.parts) == 1 and any(fnmatch(rel.name, p) for p in WEIGHT_FILES)
