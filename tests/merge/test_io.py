"""Streaming shard writer, side files, sharding and the memory plan."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
import xxhash
from peft import LoraConfig
from safetensors import safe_open

import tunevault.merge.plan
from tests.merge.helpers import save_pair, tiny_llama
from tunevault.merge import merge_lora
from tunevault.merge.plan import row_blocks, rows_cols
from tunevault.merge.safetensors_io import OutSpec, ShardWriter, read_header, read_rows

# PEFT calls a transformers API that transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")


def test_streamed_shard_reads_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "a": rng.standard_normal((5, 3)).astype(ml_dtypes.bfloat16),
        "b": np.arange(7, dtype=np.int64),
        "c": np.float32(2.5).reshape(()),
    }
    dtypes = {"a": "BF16", "b": "I64", "c": "F32"}
    path = tmp_path / "x.safetensors"
    writer = ShardWriter(path, [OutSpec(k, dtypes[k], v.shape) for k, v in tensors.items()])
    for name, value in tensors.items():
        writer.begin(name)
        writer.write(value)
        writer.end()
    writer.close()
    with safe_open(str(path), "numpy") as f:
        for name, value in tensors.items():
            assert np.array_equal(f.get_tensor(name), value)
    header = read_header(path)
    assert (header["a"].start - 8) % 8 == 0
    assert np.array_equal(read_rows(header["a"], 1, 3), tensors["a"][1:3])


def test_side_files_and_adapter_tokenizer_precedence(tmp_path: Path) -> None:
    base, adapter = save_pair(tiny_llama(), LoraConfig(target_modules=["q_proj"]), tmp_path)
    (base / "tokenizer_config.json").write_text('{"from": "base"}')
    (base / "vocab.txt").write_text("base")
    (adapter / "tokenizer_config.json").write_text('{"from": "adapter"}')
    report = merge_lora(base, adapter, tmp_path / "merged")
    out = tmp_path / "merged"
    assert json.loads((out / "tokenizer_config.json").read_text()) == {"from": "adapter"}
    # A tokenizer's files must agree, so none of the base's are mixed into the adapter's.
    assert not (out / "vocab.txt").exists()
    assert {"config.json", "generation_config.json", "model.safetensors"} <= set(
        report.output_files
    )
    assert (out / "config.json").read_text() == (base / "config.json").read_text()


def test_memory_plan_is_bounded_by_blocks_not_tensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny tensors are one block each at the default size: only smaller blocks can show that
    # the plan counts blocks rather than whole tensors.
    monkeypatch.setattr(tunevault.merge.plan, "BLOCK_ELEMS", 128)
    base, adapter = save_pair(
        tiny_llama(),
        LoraConfig(target_modules=["q_proj", "down_proj"]),
        tmp_path,
        dtype=torch.bfloat16,
    )
    report = merge_lora(base, adapter, tmp_path / "merged", max_shard_bytes=1)
    largest = max(i.nbytes for i in read_header(base / "model.safetensors").values())
    assert 0 < report.peak_bytes_planned < largest
    # One tensor per shard when the limit is below every tensor.
    index = json.loads((tmp_path / "merged" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == len(index["weight_map"])
    assert index["metadata"]["total_size"] == report.total_bytes


@pytest.mark.parametrize("shape", [(48, 192), (7, 64), (5, 50), (1, 1000), (0, 4), (), (151,)])
def test_row_blocks_cover_all_rows_and_none_alone(
    shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tunevault.merge.plan, "BLOCK_ELEMS", 150)
    blocks = row_blocks(shape)
    rows = rows_cols(shape)[0]
    assert [r for r0, r1 in blocks for r in range(r0, r1)] == list(range(rows))
    # A one-row block would take numpy's gemv path, which rounds unlike PEFT's gemm.
    assert rows == 1 or all(r1 - r0 >= 2 for r0, r1 in blocks)


def test_hashed_outputs_name_the_bytes_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Several shards, merged and copied tensors in them, blocks smaller than a tensor: the
    # digests taken while streaming must be those of the files as they lie on disk.
    monkeypatch.setattr(tunevault.merge.plan, "BLOCK_ELEMS", 128)
    base, adapter = save_pair(
        tiny_llama(), LoraConfig(target_modules=["q_proj"]), tmp_path, dtype=torch.bfloat16
    )
    out = tmp_path / "merged"
    report = merge_lora(base, adapter, out, max_shard_bytes=20_000, hash_outputs=True)
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert [f.path for f in report.files] == on_disk
    assert sum(f.path.endswith(".safetensors") for f in report.files) > 1
    for f in report.files:
        data = (out / f.path).read_bytes()
        assert (f.size, f.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert f.xxh3 == xxhash.xxh3_128_hexdigest(data)
    plain = merge_lora(base, adapter, tmp_path / "plain", max_shard_bytes=20_000)
    assert plain.files == ()
    for f in report.files:
        assert (tmp_path / "plain" / f.path).read_bytes() == (out / f.path).read_bytes()
