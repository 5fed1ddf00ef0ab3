"""Tiny random Llama models for tests that need a real transformers model."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(
    *,
    hidden: int = 64,
    intermediate: int = 96,
    vocab: int = 96,
    tie: bool = False,
    seed: int = 0,
) -> LlamaForCausalLM:
    """Two layers, 4 heads over 2 KV heads (grouped-query attention), seeded weights."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)
