"""The fused path of a plain LoRA on a bf16 base (chunks widened, merged and rounded with
integer bit operations) gives PEFT's bits exactly, and hands every value that is not
finite, or would round to inf, to the general path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

import tunevault.merge.apply
import tunevault.merge.plan
from tests.merge.helpers import load_dir, peft_merge, save_pair, tiny_llama
from tunevault.errors import MergeRefused
from tunevault.merge import merge_lora

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BASE_Q = "model.layers.1.self_attn.q_proj.weight"
ADAPTER_Q_B = "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(params=[(None, None), (150, 100), (1000, 200)], ids=["whole", "c2", "c3"])
def chunks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny tensors fit in one chunk by default; small block and chunk sizes cut 64-column
    weights into chunks of 2-3 rows, some with a lone last row to join the one before."""
    block, chunk = request.param
    if block is not None:
        monkeypatch.setattr(tunevault.merge.plan, "BLOCK_ELEMS", block)
        monkeypatch.setattr(tunevault.merge.apply, "FUSED_ELEMS", chunk)


def assert_bits_equal(ours: dict[str, torch.Tensor], reference: torch.nn.Module) -> None:
    """Every value's bits, but a NaN's payload (PEFT's and numpy's NaNs differ in it)."""
    theirs = reference.state_dict()
    for name, a in ours.items():
        b = theirs[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        nan = b.isnan()
        assert torch.equal(a.isnan(), nan), f"{name}: NaNs differ"
        same = a.view(torch.int16)[~nan] == b.view(torch.int16)[~nan]
        assert bool(same.all()), f"{name}: bits differ"


@pytest.mark.usefixtures("chunks")
@pytest.mark.parametrize("alpha", [16, 12], ids=["scale2", "scale1.5"])
def test_plain_bf16_lora_gives_peft_bits(alpha: int, tmp_path: Path) -> None:
    config = LoraConfig(r=8, lora_alpha=alpha, target_modules=ALL_LINEAR)
    base, adapter = save_pair(tiny_llama(), config, tmp_path, dtype=torch.bfloat16)
    merge_lora(base, adapter, tmp_path / "merged")
    reference = peft_merge(LlamaForCausalLM, base, adapter, torch.bfloat16)
    assert_bits_equal(load_dir(tmp_path / "merged"), reference)


@pytest.mark.usefixtures("chunks")
def test_non_finite_base_values_merge_as_peft_merges_them(tmp_path: Path) -> None:
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj"])
    base, adapter = save_pair(tiny_llama(), config, tmp_path, dtype=torch.bfloat16)
    tensors = load_file(base / "model.safetensors")
    q = tensors[BASE_Q]
    q[3, 5], q[40, 0], q[41, 63] = float("inf"), float("nan"), -float("inf")
    save_file(tensors, base / "model.safetensors", metadata={"format": "pt"})
    merge_lora(base, adapter, tmp_path / "merged")
    reference = peft_merge(LlamaForCausalLM, base, adapter, torch.bfloat16)
    assert_bits_equal(load_dir(tmp_path / "merged"), reference)


@pytest.mark.usefixtures("chunks")
def test_a_merge_that_rounds_to_inf_is_refused(tmp_path: Path) -> None:
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj"])
    base, adapter = save_pair(tiny_llama(), config, tmp_path, dtype=torch.bfloat16)
    tensors = load_file(adapter / "adapter_model.safetensors")
    # Row 7 of the delta (scale 2) is 3.397e38 in column 0: finite in fp32, above the
    # 3.3961e38 from which bf16 rounds to inf.
    tensors[ADAPTER_Q_B][7] = 0.0
    tensors[ADAPTER_Q_B][7, 0] = 1.6985e38
    tensors[ADAPTER_Q_B.replace("lora_B", "lora_A")][0] = 1.0
    save_file(tensors, adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MergeRefused, match="not finite in BF16"):
        merge_lora(base, adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
