"""One side's store operations for bench.merge_pipeline_bench, run in a child with that
side's tunevault on PYTHONPATH (an older ref cannot open a database a newer one migrated):

    python bench/merge_pipeline_side.py register '{"base": DIR}'        -> org id
    python bench/merge_pipeline_side.py commit '{"org": ID, "adapter": DIR, "n": N}' -> ft id
    python bench/merge_pipeline_side.py check_and_drop '{"org": ID, "ft": ID}'

The store comes from TUNEVAULT_DATA_DIR / TUNEVAULT_STORAGE_URL. Prints one JSON value.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from tunevault.models import Kind
from tunevault.service.context import Services, open_services
from tunevault.service.gc import collect
from tunevault.service.publishing import publish_directory, put_directory, register_base_model
from tunevault.settings import Settings


def register(svc: Services, base: str) -> str:
    org_id = svc.store.create_org("bench").id
    files = put_directory(svc.store, svc.storage, org_id, Path(base))
    register_base_model(svc, org_id, "bench/base", files)
    return org_id


def commit(svc: Services, org: str, adapter: str, n: int) -> str:
    """A LoRA fine-tune whose final adapter is committed: the merge job is queued."""
    ft = svc.store.create_fine_tune(
        org, model="bench/base", model_output_name=f"bench/lora-{n}", training_type="Lora"
    )
    publish_directory(svc, ft, Path(adapter), step=1, kind=Kind.ADAPTER, final=True)
    return ft.id


def check_and_drop(svc: Services, org: str, ft: str) -> None:
    """The merged archive is there and is its sha256; then the fine-tune and its merged
    blobs go (gc), so that runs do not fill the disk or the object store."""
    ckpt = svc.store.find_checkpoint(ft, 1, Kind.MERGED)
    assert ckpt is not None
    archive = svc.store.get_archive(ckpt.id)
    assert archive is not None, f"{ft}: no merged archive"
    h = hashlib.sha256()
    for chunk in svc.storage.iter_range(archive.storage_key):
        h.update(chunk)
    assert h.hexdigest() == archive.sha256
    svc.store.delete_fine_tune(org, ft)
    collect(svc, grace_seconds=0, dry_run=False)


OPS: dict[str, Any] = {"register": register, "commit": commit, "check_and_drop": check_and_drop}

if __name__ == "__main__":
    op, args = sys.argv[1], json.loads(sys.argv[2])
    with open_services(Settings()) as services:
        print(json.dumps(OPS[op](services, **args)))
