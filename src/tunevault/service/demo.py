"""A real, small model to download on a fresh install: a Llama-shaped base model in
safetensors with config and tokenizer, a LoRA adapter for it and a full fine-tune.

The weights are random (seeded), but names, shapes, dtypes and files are what
`transformers` and PEFT write, so every archive loads with `from_pretrained`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from tunevault.metadata import MetadataStore
from tunevault.models import FineTune, Kind, MetricRow, Organization, Scope
from tunevault.service.context import Services
from tunevault.service.publishing import publish_directory, put_directory, register_base_model
from tunevault.service.worker import Worker

BASE_NAME = "tunevault-demo/tiny-llama"
DEMO_ORG = "demo"
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TinyLlama:
    vocab: int = 512
    hidden: int = 256
    intermediate: int = 688
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def config(self) -> dict[str, object]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "max_position_embeddings": 512,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "bfloat16",
        }

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(out, in) of every projection in one layer."""
        kv = self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return {
            "self_attn.q_proj": (h, h),
            "self_attn.k_proj": (kv, h),
            "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, h),
            "mlp.gate_proj": (i, h),
            "mlp.up_proj": (i, h),
            "mlp.down_proj": (h, i),
        }


def _bf16(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).astype(ml_dtypes.bfloat16)


def base_weights(spec: TinyLlama, rng: np.random.Generator) -> dict[str, np.ndarray]:
    w: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": _bf16(rng.normal(0, 0.02, (spec.vocab, spec.hidden))),
        "model.norm.weight": _bf16(np.ones(spec.hidden)),
        "lm_head.weight": _bf16(rng.normal(0, 0.02, (spec.vocab, spec.hidden))),
    }
    for layer in range(spec.layers):
        p = f"model.layers.{layer}"
        w[f"{p}.input_layernorm.weight"] = _bf16(np.ones(spec.hidden))
        w[f"{p}.post_attention_layernorm.weight"] = _bf16(np.ones(spec.hidden))
        for name, shape in spec.linear_shapes().items():
            w[f"{p}.{name}.weight"] = _bf16(rng.normal(0, 0.02, shape))
    return w


def tokenizer_files(spec: TinyLlama) -> dict[str, object]:
    """A word-level tokenizer in the `tokenizers` JSON format, with Llama's special tokens."""
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for i in range(spec.vocab - len(specials)):
        vocab[f"w{i}"] = len(vocab)
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, t in enumerate(specials)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 512,
    }
    return {
        "tokenizer.json": tokenizer,
        "tokenizer_config.json": config,
        "special_tokens_map.json": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    }


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_model(out: Path, spec: TinyLlama, weights: dict[str, np.ndarray]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out / "config.json", spec.config())
    _write_json(out / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2})
    for name, obj in tokenizer_files(spec).items():
        _write_json(out / name, obj)
    return out


def write_adapter(
    out: Path,
    spec: TinyLlama,
    rng: np.random.Generator,
    *,
    r: int = 8,
    alpha: int = 16,
    scale: float = 1.0,
) -> Path:
    """A PEFT LoRA adapter on every linear layer (fp32, as PEFT saves it)."""
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for layer in range(spec.layers):
        for name, (fan_out, fan_in) in spec.linear_shapes().items():
            p = f"base_model.model.model.layers.{layer}.{name}"
            tensors[f"{p}.lora_A.weight"] = rng.normal(0, 1 / fan_in**0.5, (r, fan_in)).astype(
                np.float32
            )
            tensors[f"{p}.lora_B.weight"] = rng.normal(0, 0.01 * scale, (fan_out, r)).astype(
                np.float32
            )
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    _write_json(
        out / "adapter_config.json",
        {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": BASE_NAME,
            "r": r,
            "lora_alpha": alpha,
            "lora_dropout": 0.05,
            "target_modules": list(TARGETS),
            "bias": "none",
            "fan_in_fan_out": False,
            "use_rslora": False,
            "use_dora": False,
            "modules_to_save": None,
            "inference_mode": True,
        },
    )
    return out


def write_full_finetune(
    out: Path,
    spec: TinyLlama,
    base: dict[str, np.ndarray],
    rng: np.random.Generator,
    scale: float,
) -> Path:
    """The base model nudged by a seeded perturbation: what a full fine-tune's output looks like."""
    tuned = {
        k: _bf16(v.astype(np.float32) + rng.normal(0, 0.002 * scale, v.shape))
        for k, v in base.items()
    }
    return write_model(out, spec, tuned)


def seed_demo(svc: Services) -> tuple[Organization, list[FineTune]]:
    """Create the `demo` organization with a LoRA and a full fine-tune (idempotent).

    Everything goes through the publishing path: blobs, the base model, checkpoint
    manifests, and the build worker that merges the adapter and packs the archives.
    """
    store, storage = svc.store, svc.storage
    org = store.get_org_by_name(DEMO_ORG)
    if org is not None:
        return org, store.list_fine_tunes(org.id)
    rng = np.random.default_rng(0)
    spec = TinyLlama()
    org = store.create_org(DEMO_ORG)
    with tempfile.TemporaryDirectory(prefix="tunevault-demo-") as tmp_name:
        tmp = Path(tmp_name)
        base = base_weights(spec, rng)
        base_dir = write_model(tmp / "base", spec, base)
        register_base_model(svc, org.id, BASE_NAME, put_directory(store, storage, org.id, base_dir))
        lora = store.create_fine_tune(
            org.id,
            model=BASE_NAME,
            model_output_name="demo/tiny-llama-lora",
            suffix="lora",
            training_type="Lora",
            lora_r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            lora_trainable_modules=",".join(TARGETS),
            status="running",
        )
        full = store.create_fine_tune(
            org.id,
            model=BASE_NAME,
            model_output_name="demo/tiny-llama-full",
            suffix="full",
            training_type="Full",
            status="running",
        )
        for step, final in ((10, False), (20, True)):
            adapter = write_adapter(tmp / f"adapter-{step}", spec, rng, scale=step / 10)
            publish_directory(svc, lora, adapter, step=step, kind=Kind.ADAPTER, final=final)
            output = write_full_finetune(tmp / f"full-{step}", spec, base, rng, step / 10)
            publish_directory(svc, full, output, step=step, kind=Kind.MODEL_OUTPUT, final=final)
    worker = Worker(svc, name="demo-seed")
    while worker.run_once():
        pass
    for ft in (lora, full):
        _record_training(store, ft.id)
        store.set_status(org.id, ft.id, "completed")
    return org, store.list_fine_tunes(org.id)


def _record_training(store: MetadataStore, ft_id: str) -> None:
    store.add_event(ft_id, "JOB_START", "training started")
    store.add_metrics(
        ft_id,
        [
            MetricRow(step=s, values={"train/loss": round(2.5 * 0.93**s, 4), "train/lr": 1e-4})
            for s in range(1, 21)
        ],
    )
    for step in (10, 20):
        store.add_event(ft_id, "CHECKPOINT_SAVE", f"checkpoint saved at step {step}", step=step)
    store.add_event(ft_id, "JOB_COMPLETE", "training completed", step=20)


def _tool(name: str) -> str:
    """The tool next to this interpreter (the venv's), else the bare name for PATH."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def demo_banner(svc: Services, token: str, base_url: str) -> str:
    org = svc.store.get_org_by_name(DEMO_ORG)
    assert org is not None
    together, tunevault = _tool("together"), _tool("tunevault")
    lines = [
        "",
        "tunevault demo is ready.",
        f"  API key (shown once): {token}",
        f"  Web console: {base_url}/console/ (sign in with the key)",
        "",
    ]
    for ft in svc.store.list_fine_tunes(org.id):
        kind = "merged" if ft.is_lora else "model_output_path"
        lines += [
            f"  {ft.training_type} fine-tune {ft.id} ({ft.model_output_name})",
            f"    curl -fSL -H 'Authorization: Bearer {token}' -o {ft.suffix}.tar.zst \\",
            f"      '{base_url}/v1/finetune/download?ft_id={ft.id}&checkpoint={kind}'",
            f"    TOGETHER_BASE_URL={base_url} TOGETHER_API_KEY={token} \\",
            f"      {together} fine-tuning download {ft.id}",
            f"    TUNEVAULT_URL={base_url} TUNEVAULT_API_KEY={token} \\",
            f"      {tunevault} download {ft.id}:10 --extract ./{ft.suffix}-step10",
            f"    HF_ENDPOINT={base_url} HF_TOKEN={token} \\",
            f"      {_tool('hf')} download {ft.model_output_name} --local-dir ./{ft.suffix}-hf",
            "",
        ]
    return "\n".join(lines)


def seed_demo_with_key(svc: Services, base_url: str) -> str:
    """Seed the demo (once), mint a fresh key for it and return the banner that shows it."""
    org, _ = seed_demo(svc)
    _, token = svc.store.create_key(org.id, "demo", [Scope.READ, Scope.PUBLISH])
    return demo_banner(svc, token, base_url)
