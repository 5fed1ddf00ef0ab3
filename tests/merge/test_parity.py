"""tunevault's merge against PEFT's merge_and_unload on the same files, tensor by tensor."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import BertModel, GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

import tunevault.merge.plan
from tests.merge.helpers import assert_close_to_peft, load_dir, peft_merge, save_pair, tiny_llama
from tunevault.merge import merge_lora

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=48,
        n_layer=2,
        n_head=4,
        vocab_size=96,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


# name -> (model class, model factory, adapter config, base dtype)
CASES: dict[str, tuple[Any, Callable[[], torch.nn.Module], LoraConfig, torch.dtype]] = {
    "llama_all_linear_bf16": (
        LlamaForCausalLM,
        tiny_llama,
        LoraConfig(r=8, lora_alpha=16, target_modules=ALL_LINEAR),
        torch.bfloat16,
    ),
    "rslora_rank_alpha_patterns_fp32": (
        LlamaForCausalLM,
        tiny_llama,
        LoraConfig(
            r=8,
            lora_alpha=16,
            use_rslora=True,
            target_modules=ALL_LINEAR,
            exclude_modules=["model.layers.1.self_attn.v_proj"],
            rank_pattern={"q_proj": 4, "layers.1.mlp.down_proj": 2},
            alpha_pattern={"v_proj": 3, r"layers\.0\..*o_proj": 40},
        ),
        torch.float32,
    ),
    "dora_bf16": (
        LlamaForCausalLM,
        tiny_llama,
        LoraConfig(
            r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj", "down_proj"]
        ),
        torch.bfloat16,
    ),
    "dora_embedding_fp32": (
        LlamaForCausalLM,
        tiny_llama,
        LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["embed_tokens", "up_proj"]),
        torch.float32,
    ),
    "embedding_lora_modules_to_save_bf16": (
        LlamaForCausalLM,
        tiny_llama,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["embed_tokens", "q_proj"],
            modules_to_save=["lm_head"],
        ),
        torch.bfloat16,
    ),
    "layers_to_transform_fp16": (
        LlamaForCausalLM,
        tiny_llama,
        LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], layers_to_transform=[1]),
        torch.float16,
    ),
    "trainable_tokens_tied_fp32": (
        LlamaForCausalLM,
        lambda: tiny_llama(tie=True),
        LoraConfig(r=4, target_modules=["k_proj"], trainable_token_indices=[1, 5, 7]),
        torch.float32,
    ),
    "gpt2_fan_in_fan_out_bias_fp32": (
        GPT2LMHeadModel,
        tiny_gpt2,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["c_attn", "c_proj", "c_fc"],
            fan_in_fan_out=True,
            bias="all",
            lora_bias=True,
        ),
        torch.float32,
    ),
    "gpt2_dora_bf16": (
        GPT2LMHeadModel,
        tiny_gpt2,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["c_attn", "c_proj"],
            fan_in_fan_out=True,
            use_dora=True,
        ),
        torch.bfloat16,
    ),
}


@pytest.fixture(params=[None, 150, 200], ids=["one_block", "blocks150", "blocks200"])
def blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tiny tensor fits in one default block. 150 elements cuts each merged matrix into
    blocks of 2-3 rows and a 1-D bias over 150 rows into two, so row offsets, DoRA column
    norms, token rows and double buffering all cross blocks; 200 leaves 64-row weights a lone
    last row, which the block before takes."""
    if request.param is not None:
        monkeypatch.setattr(tunevault.merge.plan, "BLOCK_ELEMS", request.param)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.usefixtures("blocks")
def test_merge_matches_peft(case: str, tmp_path: Path) -> None:
    model_cls, factory, config, dtype = CASES[case]
    base_dir, adapter_dir = save_pair(factory(), config, tmp_path, dtype=dtype)
    out = tmp_path / "merged"
    # A small shard limit makes the sharded-index path part of every parity check.
    report = merge_lora(base_dir, adapter_dir, out, max_shard_bytes=64 * 1024)
    assert report.tensors_merged > 0
    assert "model.safetensors.index.json" in report.output_files

    reference = peft_merge(model_cls, base_dir, adapter_dir, dtype)
    assert_close_to_peft(load_dir(out), reference)

    ours = model_cls.from_pretrained(out, dtype=dtype).eval()
    ids = torch.randint(0, 96, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.usefixtures("blocks")
def test_dtype_option_matches_peft_on_a_cast_base(tmp_path: Path) -> None:
    config = LoraConfig(r=8, lora_alpha=16, target_modules=ALL_LINEAR, modules_to_save=["lm_head"])
    base_dir, adapter_dir = save_pair(tiny_llama(), config, tmp_path, dtype=torch.float32)
    out = tmp_path / "merged"
    merge_lora(base_dir, adapter_dir, out, dtype="bfloat16")
    # PEFT's equivalent: load the fp32 base in bf16, then merge.
    reference = peft_merge(LlamaForCausalLM, base_dir, adapter_dir, torch.bfloat16)
    assert_close_to_peft(load_dir(out), reference)
    assert '"bfloat16"' in (out / "config.json").read_text()


@pytest.mark.filterwarnings("ignore")
def test_trained_minilm_adapter_matches_peft(minilm_dir: Path, tmp_path: Path) -> None:
    """A real pretrained BERT (MiniLM) with an adapter trained for a few optimizer steps."""
    torch.manual_seed(0)
    model = BertModel.from_pretrained(minilm_dir)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["query", "value", "dense"],
        bias="lora_only",
        use_rslora=True,
    )
    peft_model = get_peft_model(model, config)
    peft_model.train()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(1000, 5000, (4, 16))
    target = torch.randn(4, 384)
    for _ in range(4):
        loss = torch.nn.functional.mse_loss(
            peft_model(input_ids=ids).last_hidden_state[:, 0], target
        )
        loss.backward()
        opt.step()
        opt.zero_grad()
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)

    out = tmp_path / "merged"
    report = merge_lora(minilm_dir, adapter_dir, out)
    # query, value and three dense per layer, and the pooler's dense; their biases are replaced
    assert report.tensors_merged == report.tensors_replaced == 6 * 5 + 1
    assert {"vocab.txt", "tokenizer.json", "config.json"} <= set(report.output_files)
    # Every base file the adapter does not replace: the sentence-transformers pipeline too.
    kept = {
        p.relative_to(minilm_dir).as_posix()
        for p in minilm_dir.rglob("*")
        if p.is_file() and p.name != "model.safetensors"
    }
    assert {"modules.json", "1_Pooling/config.json", "sentence_bert_config.json"} <= kept
    assert {"special_tokens_map.json", "vocab.txt"} <= kept
    for name in kept:
        assert (out / name).read_bytes() == (minilm_dir / name).read_bytes(), name

    reference = PeftModel.from_pretrained(BertModel.from_pretrained(minilm_dir), adapter_dir)
    reference = reference.merge_and_unload().eval()
    assert_close_to_peft(load_dir(out), reference)
    ours = BertModel.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            ours(input_ids=ids).last_hidden_state,
            reference(input_ids=ids).last_hidden_state,
            rtol=1e-5,
            atol=1e-5,
        )


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.usefixtures("blocks")
def test_tied_embeddings_with_a_saved_lm_head_are_untied_as_peft_does(
    dtype: torch.dtype, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = LoraConfig(r=4, lora_alpha=8, target_modules=ALL_LINEAR, modules_to_save=["lm_head"])
    base_dir, adapter_dir = save_pair(tiny_llama(tie=True), config, tmp_path, dtype=dtype)
    out = tmp_path / "merged"
    report = merge_lora(base_dir, adapter_dir, out)
    assert report.untied == ("lm_head.weight",)
    assert "no longer tied" in caplog.text

    reference = peft_merge(LlamaForCausalLM, base_dir, adapter_dir, dtype)
    assert reference.config.tie_word_embeddings is False  # what PEFT does, warning too
    ours_tensors = load_dir(out)
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= set(ours_tensors)
    assert_close_to_peft(ours_tensors, reference)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False

    ours = LlamaForCausalLM.from_pretrained(out, dtype=dtype).eval()
    assert ours.lm_head.weight.data_ptr() != ours.model.embed_tokens.weight.data_ptr()
    ids = torch.randint(0, 96, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
