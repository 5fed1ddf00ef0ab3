"""Generated training output directories, laid out the way transformers and PEFT write them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

RESUME_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin")


def weights(path: Path, nbytes: int, seed: int) -> None:
    """A safetensors file of ~nbytes of random float32 (random: incompressible, unique)."""
    rng = np.random.default_rng(seed)
    n = max(nbytes // 4, 1)
    save_file({"w": rng.standard_normal(n, dtype=np.float32)}, str(path))


def adapter(path: Path, *, seed: int = 0, nbytes: int = 4096, base: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.05,
        "target_modules": ["v_proj", "q_proj"],
        "base_model_name_or_path": base,
    }
    (path / "adapter_config.json").write_text(json.dumps(config))
    weights(path / "adapter_model.safetensors", nbytes, seed)
    (path / "README.md").write_text("# adapter\n")
    return path


def full(path: Path, *, seed: int = 0, nbytes: int = 4096, shards: int = 1) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 32}))
    for i in range(shards):
        weights(path / f"model-{i + 1:05d}-of-{shards:05d}.safetensors", nbytes, seed * 100 + i)
    return path


def trainer_state(path: Path, steps: int) -> None:
    history = [
        {
            "epoch": s / 10,
            "grad_norm": 0.5,
            "learning_rate": 1e-4 / s,
            "loss": 3.0 - s / 10,
            "step": s,
        }
        for s in range(1, steps + 1)
    ]
    history.append({"eval_loss": 2.0, "step": steps})
    history.append({"train_runtime": 1.5, "train_loss": 2.5, "total_flos": 1.0, "step": steps})
    (path / "trainer_state.json").write_text(
        json.dumps({"global_step": steps, "log_history": history})
    )


def trainer_output(
    root: Path,
    *,
    saves: tuple[int, ...] = (2, 4, 6),
    lora: bool = True,
    final: bool = True,
    nbytes: int = 4096,
) -> Path:
    """A Trainer output_dir: checkpoint-N/ with resume state, and the final model on top."""
    root.mkdir(parents=True, exist_ok=True)
    make = adapter if lora else full
    for step in saves:
        ckpt = make(root / f"checkpoint-{step}", seed=step, nbytes=nbytes)
        for name in RESUME_FILES:
            (ckpt / name).write_bytes(b"resume state " + name.encode())
        trainer_state(ckpt, step)
    if final:
        make(root, seed=1000, nbytes=nbytes)
    (root / "training_args.bin").write_bytes(b"pickled args")
    return root
