"""transformers and PEFT load fine-tunes straight from the endpoint (HF_ENDPOINT), and get
what they get from the extracted archives."""

from __future__ import annotations

from pathlib import Path

from tests.hub.conftest import Hub, write_tree
from tunevault.models import Kind
from tunevault.service.demo import BASE_NAME


def test_from_pretrained_gives_the_logits_of_the_extracted_archive(
    hub: Hub, tmp_path: Path
) -> None:
    lora, full = hub.demo.lora, hub.demo.full
    merged = write_tree(tmp_path / "merged", hub.archive_files(lora, 20, Kind.MERGED))
    found = hub.run("logits", lora.model_output_name, "main", str(merged))
    assert found == {"equal": True, "shape": [1, 12, 512]}
    step10 = write_tree(tmp_path / "full10", hub.archive_files(full, 10, Kind.MODEL_OUTPUT))
    assert hub.run("logits", full.id, "step-10", str(step10))["equal"]


def test_peft_loads_the_adapter_revision_on_the_base_repo(hub: Hub, tmp_path: Path) -> None:
    lora = hub.demo.lora
    base = write_tree(tmp_path / "base", hub.base_files(BASE_NAME))
    adapter = write_tree(tmp_path / "adapter", hub.archive_files(lora, 20, Kind.ADAPTER))
    found = hub.run("peft_logits", BASE_NAME, lora.id, "adapter", str(base), str(adapter))
    assert found == {"equal": True, "auto_equal": True}


def test_the_hub_calls_of_vllms_model_loader(hub: Hub) -> None:
    """vLLM is no test dependency (its wheels bring a CUDA build of torch): the Hub calls of
    its model loader, replayed with huggingface_hub (tests/hub/clients.py)."""
    lora = hub.demo.lora
    found = hub.run("vllm_loader", lora.model_output_name, "main")
    merged = hub.archive_files(lora, 20, Kind.MERGED)
    assert found["weights"] == ["model.safetensors"] and found["mistral"] == []
    assert (Path(found["folder"]) / "model.safetensors").read_bytes() == merged["model.safetensors"]
    assert found["model_type"] == "llama" and found["generation"] and found["index"] is False
    assert found["vocab"] == 512 and len(found["commit"]) == 40
