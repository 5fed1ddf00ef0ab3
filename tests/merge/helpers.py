"""Builders for merge tests: tiny random models saved to tmp_path, PEFT's own merge as reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from tests.support import llama

torch.set_num_threads(2)


def tiny_llama(*, tie: bool = False, seed: int = 0, intermediate: int = 96) -> LlamaForCausalLM:
    return llama.tiny_llama(tie=tie, seed=seed, intermediate=intermediate).eval()


def perturb_adapter(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every trainable adapter tensor random values, so each delta is non-zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.05
                p.add_(noise.to(p.dtype))


def save_pair(
    model: torch.nn.Module,
    config: LoraConfig,
    root: Path,
    *,
    dtype: torch.dtype = torch.float32,
    perturb: bool = True,
) -> tuple[Path, Path]:
    """Save `model` in `dtype` as the base and a perturbed PEFT adapter for it."""
    base_dir, adapter_dir = root / "base", root / "adapter"
    model = model.to(dtype)
    model.save_pretrained(base_dir)
    peft_model = get_peft_model(model, config)
    if perturb:
        perturb_adapter(peft_model)
    peft_model.save_pretrained(adapter_dir)
    return base_dir, adapter_dir


def peft_merge(
    model_cls: Any, base_dir: Path, adapter_dir: Path, dtype: torch.dtype
) -> torch.nn.Module:
    """The reference: transformers loads the base, PEFT loads the adapter and merges."""
    base = model_cls.from_pretrained(base_dir, dtype=dtype)
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().eval()


def load_dir(out_dir: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(out_dir.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def assert_close_to_peft(ours: dict[str, torch.Tensor], reference: torch.nn.Module) -> None:
    """Every tensor within one step of its dtype (bf16/fp16), or 1e-6 relative in fp32.

    Tied weights appear once in our files; integer buffers may be absent from the reference.
    """
    theirs = reference.state_dict()
    first_of_ptr: dict[int, str] = {}
    for name, t in theirs.items():
        first_of_ptr.setdefault(t.data_ptr(), name)
    for name in set(theirs) - set(ours):
        assert first_of_ptr[theirs[name].data_ptr()] in ours, f"missing {name}"
    for name in set(ours) - set(theirs):
        assert not ours[name].is_floating_point(), f"unexpected {name}"
    for name in set(ours) & set(theirs):
        a, b = ours[name], theirs[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if not a.is_floating_point():
            assert torch.equal(a, b), name
            continue
        a32, b32 = a.float(), b.float()
        if a.dtype == torch.float32:
            tol = 1e-6 * b32.abs() + 1e-8 * b32.abs().max()
        else:
            mag = torch.maximum(a32.abs(), b32.abs()).clamp_min(torch.finfo(a.dtype).tiny)
            mantissa = {torch.bfloat16: 7, torch.float16: 10}[a.dtype]
            tol = torch.exp2(torch.floor(torch.log2(mag)) - mantissa)
        bad = (a32 - b32).abs() > tol
        assert not bad.any(), f"{name}: {int(bad.sum())} differ, max {(a32 - b32).abs().max()}"
