"""snapshot_download and hf_hub_download, by the real huggingface_hub, against the server."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx

from tests.hub.conftest import Hub, tree_bytes
from tunevault.models import Kind
from tunevault.service.demo import BASE_NAME


def test_every_revision_is_its_archive_byte_for_byte(hub: Hub) -> None:
    lora, full = hub.demo.lora, hub.demo.full
    name = lora.model_output_name
    expected = {
        (lora.id, "main"): (lora, 20, Kind.MERGED),
        (lora.id, "adapter"): (lora, 20, Kind.ADAPTER),
        (lora.id, "merged"): (lora, 20, Kind.MERGED),
        (lora.id, "step-10"): (lora, 10, Kind.ADAPTER),
        (name, "main"): (lora, 20, Kind.MERGED),
        (name, "adapter"): (lora, 20, Kind.ADAPTER),
        (name, "step-10"): (lora, 10, Kind.ADAPTER),
        (full.id, "main"): (full, 20, Kind.MODEL_OUTPUT),
        (full.model_output_name, "step-10"): (full, 10, Kind.MODEL_OUTPUT),
    }
    found = hub.run("snapshots", [list(k) for k in expected])
    commits: dict[tuple[str, int, Kind], str] = {}
    for (repo, rev), (ft, step, kind) in expected.items():
        folder = Path(found[f"{repo}@{rev}"])
        assert tree_bytes(folder) == hub.archive_files(ft, step, kind), (repo, rev)
        # The snapshot folder is named by the revision's commit: one per checkpoint.
        assert re.fullmatch(r"[0-9a-f]{40}", folder.name)
        assert commits.setdefault((ft.id, step, kind), folder.name) == folder.name
    assert len(set(commits.values())) == len(commits)


def test_the_base_model_is_a_repo_too(hub: Hub) -> None:
    found = hub.run("snapshots", [[BASE_NAME, "main"]])
    assert tree_bytes(Path(found[f"{BASE_NAME}@main"])) == hub.base_files(BASE_NAME)


def test_one_file_by_name_and_by_commit(hub: Hub) -> None:
    lora = hub.demo.lora
    head = httpx.head(
        f"{hub.demo.url}/{lora.model_output_name}/resolve/adapter/adapter_config.json",
        headers={"Authorization": f"Bearer {hub.demo.token}"},
    )
    assert head.status_code == 200, head.text
    commit = head.headers["x-repo-commit"]
    data = hub.archive_files(lora, 20, Kind.ADAPTER)["adapter_config.json"]
    assert int(head.headers["content-length"]) == len(data)
    assert head.headers["x-linked-size"] == str(len(data))
    assert head.headers["etag"] == head.headers["x-linked-etag"]
    for revision in ("adapter", commit):
        path = hub.run("download", lora.id, revision, "adapter_config.json")
        assert Path(path).read_bytes() == data
        assert f"/snapshots/{commit}/" in path


def test_ranges_and_the_sha256_etag(hub: Hub) -> None:
    full = hub.demo.full
    data = hub.archive_files(full, 20, Kind.MODEL_OUTPUT)["model.safetensors"]
    url = f"{hub.demo.url}/{full.id}/resolve/main/model.safetensors"
    auth = {"Authorization": f"Bearer {hub.demo.token}"}
    whole = httpx.get(url, headers=auth)
    assert whole.content == data
    etag = whole.headers["etag"]
    assert etag.strip('"') == hashlib.sha256(data).hexdigest()
    part = httpx.get(url, headers={**auth, "Range": "bytes=100-", "If-Range": etag})
    assert part.status_code == 206 and part.content == data[100:]
    stale = httpx.get(url, headers={**auth, "Range": "bytes=100-", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == data


def test_tree_pages_follow_the_link_header(hub: Hub) -> None:
    full = hub.demo.full
    auth = {"Authorization": f"Bearer {hub.demo.token}"}
    url: str | None = f"{hub.demo.url}/api/models/{full.id}/tree/main?recursive=true&limit=2"
    pages = []
    while url:
        r = httpx.get(url, headers=auth)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        url = r.links.get("next", {}).get("url")
    assert len(pages) > 1 and all(len(p) <= 2 for p in pages)
    listed = [e["path"] for p in pages for e in p]
    assert listed == sorted(hub.archive_files(full, 20, Kind.MODEL_OUTPUT))
