"""The Hub clients under test, run in a child process (`python -m tests.hub.clients CMD
JSON`): huggingface_hub reads HF_ENDPOINT and HF_TOKEN when it is imported, so each run
gets a fresh interpreter with the environment the test chose. Prints one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError


def snapshots(specs: list[list[str]]) -> dict[str, str]:
    """snapshot_download of each [repo, revision]: where its files are."""
    return {f"{repo}@{rev}": snapshot_download(repo, revision=rev) for repo, rev in specs}


def download(repo: str, revision: str, filename: str) -> str:
    return hf_hub_download(repo, filename, revision=revision)


def failures(calls: list[list[str]]) -> list[dict[str, Any]]:
    """Each [how, repo, revision, filename]: the exception the client raised."""
    api = HfApi()
    found = []
    for how, repo, revision, filename in calls:
        try:
            if how == "file":
                hf_hub_download(repo, filename, revision=revision)
            elif how == "info":
                api.model_info(repo, revision=revision)
            else:
                snapshot_download(repo, revision=revision)
            found.append({"raised": None})
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else None
            found.append({"raised": type(e).__name__, "status": status, "message": str(e)})
    return found


def whoami() -> dict[str, Any]:
    return HfApi().whoami()


def logits(repo: str, revision: str, local: str) -> dict[str, Any]:
    """The same input through the model loaded from the endpoint and from a local dir."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.arange(12).reshape(1, 12)
    with torch.no_grad():
        remote = AutoModelForCausalLM.from_pretrained(repo, revision=revision)(ids).logits
        here = AutoModelForCausalLM.from_pretrained(local)(ids).logits
    return {"equal": bool(torch.equal(remote, here)), "shape": list(remote.shape)}


def peft_logits(base: str, repo: str, revision: str, local_base: str, local: str) -> dict[str, Any]:
    """An adapter revision on the base repo, both from the endpoint, against local copies."""
    import torch
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.arange(12).reshape(1, 12)
    with torch.no_grad():
        on_base = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base), repo, revision=revision
        )(ids).logits
        # The adapter names its base (base_model_name_or_path): found at the same endpoint.
        auto = AutoPeftModelForCausalLM.from_pretrained(repo, revision=revision)(ids).logits
        here = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(local_base), local)(
            ids
        ).logits
    return {"equal": bool(torch.equal(on_base, here)), "auto_equal": bool(torch.equal(auto, here))}


def vllm_loader(repo: str, revision: str) -> dict[str, Any]:
    """The Hub calls vLLM makes to load a model (vllm/transformers_utils/repo_utils.py,
    config.py, model_loader/default_loader.py and weight_utils.py), in its order."""
    import fnmatch
    import glob
    import os

    from huggingface_hub import HfFileSystem, try_to_load_from_cache
    from huggingface_hub.utils import EntryNotFoundError
    from transformers import AutoTokenizer

    api = HfApi(library_name="vllm", library_version="replay")
    resolved = api.resolve_revision(repo, revision=revision)  # repo_utils.resolve_revision
    files = api.list_repo_files(repo, revision=resolved)  # list_repo_files, cached
    # file_or_path_exists("config.json"): the cache first, then the listing.
    assert try_to_load_from_cache(repo, "config.json", revision=resolved) is None
    assert "config.json" in files
    config = json.loads(
        Path(api.hf_hub_download(repo, "config.json", revision=resolved)).read_text()
    )
    generation = api.hf_hub_download(repo, "generation_config.json", revision=resolved)
    # _prepare_weights: mistral format? (list_filtered_repo_files), then download_weights_from_hf.
    mistral = [
        f for f in files if fnmatch.fnmatch(os.path.basename(f), "consolidated*.safetensors")
    ]
    listed = HfFileSystem().ls(repo, detail=False, revision=resolved)
    patterns = ["*.safetensors", "*.bin", "*.pt"]
    pattern = next(p for p in patterns if fnmatch.filter(listed, p))
    folder = snapshot_download(repo, allow_patterns=[pattern], revision=resolved)
    weights = sorted(glob.glob(os.path.join(folder, pattern)))
    try:  # asked for whether or not there are several shards; absent in most repos
        api.hf_hub_download(repo, "model.safetensors.index.json", revision=resolved)
        index = True
    except EntryNotFoundError:
        index = False
    tokenizer = AutoTokenizer.from_pretrained(repo, revision=resolved)
    return {
        "commit": resolved.resolved,
        "model_type": config["model_type"],
        "generation": Path(generation).is_file(),
        "mistral": mistral,
        "weights": [os.path.relpath(w, folder) for w in weights],
        "folder": folder,
        "index": index,
        "vocab": tokenizer.vocab_size,
    }


COMMANDS = {
    "snapshots": snapshots,
    "download": download,
    "failures": failures,
    "whoami": whoami,
    "logits": logits,
    "peft_logits": peft_logits,
    "vllm_loader": vllm_loader,
}

if __name__ == "__main__":
    args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else []
    print(json.dumps(COMMANDS[sys.argv[1]](*args)))
