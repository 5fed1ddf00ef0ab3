"""The ready-to-paste commands shown for each checkpoint: the together CLI, `tunevault
download`, curl and a Hugging Face Hub client pointed at tunevault (HF_ENDPOINT)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from tunevault.models import Checkpoint, FineTune, Kind
from tunevault.server.render import download_path


@dataclass(frozen=True)
class Snippet:
    label: str
    command: str


def _hf_revision(ckpt: Checkpoint) -> str:
    """The Hub revision naming this checkpoint: a final one by its kind, else `step-N`."""
    return ckpt.kind.value if ckpt.final else f"step-{ckpt.step}"


def snippets(base_url: str, ft: FineTune, ckpt: Checkpoint, filename: str) -> list[Snippet]:
    """Commands that fetch exactly this checkpoint; the key stays in an environment variable."""
    key = "$TUNEVAULT_API_KEY"
    if ckpt.final:
        path = download_path(ft.id, checkpoint=ckpt.kind.value)
        together_arg = f"--checkpoint-type {'adapter' if ckpt.kind == Kind.ADAPTER else 'merged'}"
        if ckpt.kind == Kind.MODEL_OUTPUT:
            together_arg = "--checkpoint-type default"
        tunevault_ref = f"{ft.id} --checkpoint {ckpt.kind.value}"
    else:
        path = download_path(ft.id, step=ckpt.step)
        together_arg = f"--checkpoint-step {ckpt.step}"
        tunevault_ref = f"{ft.id}:{ckpt.step}"
    url = shlex.quote(base_url)
    return [
        Snippet(
            "together CLI",
            f'TOGETHER_BASE_URL={url} TOGETHER_API_KEY="{key}" '
            f"together fine-tuning download {ft.id} {together_arg}",
        ),
        Snippet(
            "tunevault",
            f'TUNEVAULT_URL={url} TUNEVAULT_API_KEY="{key}" tunevault download {tunevault_ref}',
        ),
        Snippet(
            "curl",
            f'curl -fL -C - -H "Authorization: Bearer {key}" '
            f"-o {shlex.quote(filename)} {shlex.quote(base_url + path)}",
        ),
        Snippet(
            "HF_ENDPOINT",
            f'HF_ENDPOINT={url} HF_TOKEN="{key}" '
            f"hf download {ft.id} --revision {_hf_revision(ckpt)}",
        ),
    ]
