"""Every refusal happens before output exists, and names what does not fit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from peft import LoraConfig
from safetensors.torch import load_file, save_file

from tests.merge.helpers import save_pair, tiny_llama
from tunevault.commands.main import main
from tunevault.errors import MergeRefused
from tunevault.merge import merge_lora

BASE_Q = "model.layers.1.self_attn.q_proj.weight"
ADAPTER_Q_A = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"

# PEFT calls a transformers API that transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    return save_pair(tiny_llama(), config, tmp_path, dtype=torch.float16)


def edit_config(adapter_dir: Path, **changes: object) -> None:
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def edit_tensors(path: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def refused(base: Path, adapter: Path, match: str, **kwargs: object) -> None:
    out = base.parent / "merged"
    with pytest.raises(MergeRefused, match=match):
        merge_lora(base, adapter, out, **kwargs)  # type: ignore[arg-type]
    assert not out.exists()
    assert not [p for p in base.parent.iterdir() if p.name.startswith(".merged")]


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("some_future_option", 3, "some_future_option"),
        ("layer_replication", [[0, 1]], "layer_replication"),
        ("target_parameters", ["experts.weight"], "target_parameters"),
        ("use_qalora", True, "use_qalora"),
        ("alora_invocation_tokens", [5], "alora_invocation_tokens"),
        ("ensure_weight_tying", True, "ensure_weight_tying"),
        ("init_lora_weights", "pissa", "init_lora_weights='pissa'"),
        ("init_lora_weights", "olora", "rewrites the base weights"),
        ("peft_type", "IA3", "IA3"),
        ("bias", "some", "bias='some'"),
        ("r", 2, "rank from adapter_config.json is 2"),
        ("target_modules", ["v_proj"], "q_proj.*do not select"),
        ("target_modules", ["q_proj", "v_proj", "k_proj"], "selects .*k_proj.* no LoRA weights"),
        ("layers_to_transform", [0], "layers.1.self_attn.*do not select"),
        ("use_dora", True, "lacks lora_magnitude_vector"),
        ("trainable_token_indices", [1, 2], None),
    ],
)
def test_config_refusals(
    pair: tuple[Path, Path], option: str, value: object, match: str | None
) -> None:
    base, adapter = pair
    edit_config(adapter, **{option: value})
    if match is None:  # indices without deltas in the file: nothing to apply them to
        merge_lora(base, adapter, base.parent / "merged")
        return
    refused(base, adapter, match)


def test_shape_mismatch(tmp_path: Path) -> None:
    base, _ = save_pair(tiny_llama(), LoraConfig(target_modules=["q_proj"]), tmp_path / "a")
    wider = tiny_llama(intermediate=80)
    _, adapter = save_pair(wider, LoraConfig(target_modules=["gate_proj"]), tmp_path / "b")
    refused(base, adapter, r"gate_proj: base weight \[96, 64\] does not fit")


def test_missing_base_tensor(pair: tuple[Path, Path]) -> None:
    base, adapter = pair
    edit_tensors(base / "model.safetensors", lambda t: t.pop(BASE_Q))
    refused(base, adapter, f"targets '{BASE_Q}', which the base lacks")


def test_replacement_of_missing_base_tensor(pair: tuple[Path, Path]) -> None:
    base, adapter = pair
    extra = {"base_model.model.score.weight": torch.zeros(2, 64)}
    edit_tensors(adapter / "adapter_model.safetensors", lambda t: t.update(extra))
    refused(base, adapter, "replaces 'score.weight', absent from base")


def test_integer_adapter_tensor(pair: tuple[Path, Path]) -> None:
    base, adapter = pair

    def to_int(t: dict[str, torch.Tensor]) -> None:
        t[ADAPTER_Q_A] = t[ADAPTER_Q_A].to(torch.int32)

    edit_tensors(adapter / "adapter_model.safetensors", to_int)
    refused(base, adapter, "has dtype I32, not a float")


def test_integer_base_tensor(pair: tuple[Path, Path]) -> None:
    base, adapter = pair

    def to_int(t: dict[str, torch.Tensor]) -> None:
        t[BASE_Q] = t[BASE_Q].to(torch.int8)

    edit_tensors(base / "model.safetensors", to_int)
    refused(base, adapter, "has dtype I8; cannot merge into it")


def test_unknown_dtype_option(pair: tuple[Path, Path]) -> None:
    refused(*pair, "dtype 'int8'", dtype="int8")


def test_overflow_refused_and_nothing_left_behind(pair: tuple[Path, Path]) -> None:
    base, adapter = pair

    def huge(t: dict[str, torch.Tensor]) -> None:
        key = ADAPTER_Q_A.replace("lora_A", "lora_B")
        t[key] = torch.full_like(t[key], 1e4)
        t[ADAPTER_Q_A] = torch.full_like(t[ADAPTER_Q_A], 1e4)

    edit_tensors(adapter / "adapter_model.safetensors", huge)
    refused(base, adapter, "not finite in F16")


def test_lora_bias_without_base_bias(pair: tuple[Path, Path]) -> None:
    base, adapter = pair
    key = ADAPTER_Q_A.replace("lora_A.weight", "lora_B.bias")
    edit_tensors(adapter / "adapter_model.safetensors", lambda t: t.update({key: torch.ones(64)}))
    edit_config(adapter, lora_bias=True)
    refused(base, adapter, "lora_bias needs base tensor .*q_proj.bias")


def test_unknown_lora_variant_tensor(pair: tuple[Path, Path]) -> None:
    base, adapter = pair
    key = ADAPTER_Q_A.replace("lora_A.weight", "lora_E")
    edit_tensors(adapter / "adapter_model.safetensors", lambda t: t.update({key: torch.ones(4)}))
    refused(base, adapter, "LoRA variant the merge does not know")


def test_missing_files(pair: tuple[Path, Path]) -> None:
    base, adapter = pair
    (base / "model.safetensors").rename(base / "weights.bin")
    refused(base, adapter, "no model.safetensors")
    (adapter / "adapter_config.json").unlink()
    refused(base, adapter, "no adapter_config.json")


def test_output_must_be_new(pair: tuple[Path, Path]) -> None:
    base, adapter = pair
    out = base.parent / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(MergeRefused, match="exists and is not empty"):
        merge_lora(base, adapter, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli(pair: tuple[Path, Path]) -> None:
    base, adapter = pair
    out = base.parent / "merged"
    result = CliRunner().invoke(main, ["merge", str(base), str(adapter), str(out)])
    assert result.exit_code == 0, result.output
    assert "merged 4 tensors" in result.output
    assert (out / "model.safetensors").is_file()
    result = CliRunner().invoke(main, ["merge", str(base), str(adapter), str(out)])
    assert result.exit_code == 2  # a refused merge is a usage error (docs/client.md)
    assert result.output.startswith("error: output directory")
