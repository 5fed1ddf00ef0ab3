"""The adapter archive names the registered base model, not the training machine's path.

PEFT records `base_model_name_or_path` as the trainer saw it, often a scratch directory of
that machine; `PeftModel.from_pretrained` elsewhere then cannot find the base. The archive
carries `adapter_config.json` with the fine-tune's `model` instead (its `SHA256SUMS` too);
the stored upload stays as it was uploaded. The rewrite is deterministic: same upload, same
name, same bytes.
"""

from __future__ import annotations

import hashlib
import json

from tunevault.errors import IntegrityError
from tunevault.layout import blob_key
from tunevault.metadata import MetadataStore
from tunevault.models import Checkpoint, FileEntry, Kind
from tunevault.storage import Storage

CONFIG = "adapter_config.json"
KEY = "base_model_name_or_path"
MAX_CONFIG_BYTES = 1 << 20


def archive_overrides(store: MetadataStore, storage: Storage, ckpt: Checkpoint) -> dict[str, bytes]:
    """Files whose archived content differs from the upload: path -> the bytes to pack."""
    entry = next((f for f in ckpt.files if f.path == CONFIG), None)
    if ckpt.kind != Kind.ADAPTER or entry is None or entry.size > MAX_CONFIG_BYTES:
        return {}
    ft = store.fine_tune_by_id(ckpt.ft_id)
    if ft is None:
        return {}
    rewritten = named_base(_read(storage, entry), ft.model)
    return {} if rewritten is None else {CONFIG: rewritten}


def named_base(raw: bytes, model: str) -> bytes | None:
    """The config with `base_model_name_or_path` set to `model`; None when it already is,
    or when the file is not a JSON object (packed as uploaded: PEFT will say what is wrong)."""
    try:
        config = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(config, dict) or config.get(KEY) == model:
        return None
    config[KEY] = model
    return (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode()


def replaced(files: tuple[FileEntry, ...], overrides: dict[str, bytes]) -> tuple[FileEntry, ...]:
    """The manifest as archived: overridden files with their new size and digest."""
    return tuple(
        FileEntry(f.path, len(data), hashlib.sha256(data).hexdigest())
        if (data := overrides.get(f.path)) is not None
        else f
        for f in files
    )


def _read(storage: Storage, entry: FileEntry) -> bytes:
    with storage.open_read(blob_key(entry.sha256)) as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise IntegrityError(
            f"stored content of {entry.path!r} does not match its manifest; the blob is "
            "corrupt, re-push the checkpoint"
        )
    return data
