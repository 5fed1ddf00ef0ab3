"""A merged checkpoint's files are streamed into its archive and stored as blobs only when
the Hub protocol first asks for one: that GET is held while one `merge_files` job runs,
however many clients ask, and gets the archive's bytes."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from tests.conftest import FreshOrg
from tests.hub.conftest import Hub
from tests.test_archive import contents
from tunevault.layout import blob_key
from tunevault.models import FineTune, JobKind, Kind
from tunevault.service.context import open_services
from tunevault.service.demo import TinyLlama, base_weights, write_adapter, write_model
from tunevault.service.publishing import publish_directory, put_directory, register_base_model
from tunevault.service.worker import Worker

SPEC = TinyLlama(vocab=128, hidden=64, intermediate=160, layers=2)


def _merged_lora(hub: Hub, org: FreshOrg, tmp: Path) -> tuple[FineTune, dict[str, bytes]]:
    """A LoRA fine-tune of `org` merged by a worker of its own; its merged archive's files."""
    with open_services(hub.demo.settings) as svc:
        base_dir = write_model(tmp / "base", SPEC, base_weights(SPEC, np.random.default_rng(3)))
        files = put_directory(svc.store, svc.storage, org.id, base_dir)
        register_base_model(svc, org.id, "fresh/base", files)
        ft = svc.store.create_fine_tune(
            org.id, model="fresh/base", model_output_name="fresh/lora", training_type="Lora"
        )
        adapter = write_adapter(tmp / "adapter", SPEC, np.random.default_rng(4))
        publish_directory(svc, ft, adapter, step=1, kind=Kind.ADAPTER, final=True)
        worker = Worker(svc)
        while worker.run_once():
            pass
        merged = svc.store.find_checkpoint(ft.id, 1, Kind.MERGED)
        assert merged is not None
        archive = svc.store.get_archive(merged.id)
        assert archive is not None
        members = contents(b"".join(svc.storage.iter_range(archive.storage_key)))
        shard = next(f for f in merged.files if f.path == "model.safetensors")
        assert svc.storage.stat(blob_key(shard.sha256)) is None  # streamed, not stored
    return ft, members


def _merge_files_jobs(hub: Hub, ft: FineTune) -> list[str]:
    with open_services(hub.demo.settings) as svc:
        merged = svc.store.find_checkpoint(ft.id, 1, Kind.MERGED)
        assert merged is not None
        jobs = svc.store.jobs_for_checkpoint(merged.id)
        return [j.state for j in jobs if j.kind == JobKind.MERGE_FILES]


def test_the_first_hub_get_stores_the_merged_files_once(
    hub: Hub, fresh_org: FreshOrg, tmp_path: Path
) -> None:
    ft, members = _merged_lora(hub, fresh_org, tmp_path)
    url = f"{hub.demo.url}/{ft.id}/resolve/merged/model.safetensors"
    auth = {"Authorization": f"Bearer {fresh_org.token}"}
    # A HEAD answers from the manifest, and queues nothing.
    head = httpx.head(url, headers=auth)
    assert head.status_code == 200, head.text
    want = hashlib.sha256(members["model.safetensors"]).hexdigest()
    assert head.headers["X-Linked-Etag"] == f'"{want}"'
    assert int(head.headers["Content-Length"]) == len(members["model.safetensors"])
    assert _merge_files_jobs(hub, ft) == []
    # Three clients at once: each held until the files are stored, one job for all.
    with ThreadPoolExecutor(3) as pool:
        paths = list(
            pool.map(
                lambda _: hub.run(
                    "download", ft.id, "merged", "model.safetensors", token=fresh_org.token
                ),
                range(3),
            )
        )
    assert all(Path(p).read_bytes() == members["model.safetensors"] for p in paths)
    assert _merge_files_jobs(hub, ft) == ["done"]
    # Every merged file is served now, each as the archive holds it.
    for name in ("config.json", "model.safetensors"):
        got = httpx.get(f"{hub.demo.url}/{ft.id}/resolve/merged/{name}", headers=auth)
        assert got.status_code == 200 and got.content == members[name]
    assert _merge_files_jobs(hub, ft) == ["done"]
