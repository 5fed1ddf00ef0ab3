"""A tiny random Llama trained for a few steps on CPU with the real Trainer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from configs, never the hub

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from tests.support import llama

VOCAB = 128


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    return llama.tiny_llama(hidden=32, intermediate=64, vocab=VOCAB, seed=seed)


def with_lora(model: LlamaForCausalLM) -> Any:
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    return get_peft_model(model, config)


class RandomTokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, VOCAB, (16,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": ids, "labels": ids.clone()}


def train(
    model: Any, out: Path, callbacks: Sequence[TrainerCallback], *, max_steps: int = 6
) -> Trainer:
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        save_steps=2,
        logging_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=RandomTokens(), callbacks=list(callbacks)
    )
    trainer.train()
    return trainer
