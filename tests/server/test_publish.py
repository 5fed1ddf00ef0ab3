"""The publishing API on a live server: uploads, manifests, builds, merges, isolation."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import xxhash
import zstandard

from tests.support.server import LiveServer, run_server
from tunevault.layout import blob_key
from tunevault.merge import merge_lora
from tunevault.models import Scope
from tunevault.service.adapterconfig import named_base
from tunevault.service.builds import build_archive
from tunevault.service.context import open_services
from tunevault.service.demo import BASE_NAME, TinyLlama, base_weights, write_adapter, write_model
from tunevault.settings import Settings


@dataclass(frozen=True)
class Env:
    server: LiveServer
    settings: Settings
    a: httpx.Client
    b: httpx.Client
    a_read: httpx.Client


@dataclass(frozen=True)
class Served:
    server: LiveServer
    settings: Settings


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("publish")
    settings = Settings(data_dir=data_dir)
    with open_services(settings):  # migrated before the server starts
        pass
    with run_server(data_dir, env={"TUNEVAULT_JOB_POLL_SECONDS": "0.1"}) as server:
        yield Served(server, settings)


_orgs = iter(range(10**6))


@pytest.fixture
def env(served: Served) -> Iterator[Env]:
    """The module's server, with two organizations of this test's own: no test sees
    another's fine-tunes or blobs, whatever the order they run in."""
    n = next(_orgs)
    with open_services(served.settings) as svc:
        org_a, org_b = svc.store.create_org(f"a{n}"), svc.store.create_org(f"b{n}")
        _, ta = svc.store.create_key(org_a.id, "rw", [Scope.READ, Scope.PUBLISH])
        _, tr = svc.store.create_key(org_a.id, "ro", [Scope.READ])
        _, tb = svc.store.create_key(org_b.id, "rw", [Scope.READ, Scope.PUBLISH])

    def client(token: str) -> httpx.Client:
        return httpx.Client(
            base_url=served.server.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        )

    with client(ta) as a, client(tb) as b, client(tr) as a_read:
        yield Env(served.server, served.settings, a, b, a_read)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(
    c: httpx.Client,
    data: bytes,
    offset: int = 0,
    total: int | None = None,
    digest: str | None = None,
) -> httpx.Response:
    return c.put(
        f"/v1/publish/blobs/{digest or sha(data)}",
        content=data[offset:],
        headers={
            "Upload-Length": str(len(data) if total is None else total),
            "Upload-Offset": str(offset),
        },
    )


def manifest(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [{"path": p, "size": len(d), "sha256": sha(d)} for p, d in files.items()]


def new_ft(c: httpx.Client, lora: bool = False, model: str = "base") -> dict[str, Any]:
    tt = {"type": "Lora", "lora_r": 8, "lora_alpha": 16} if lora else {"type": "Full"}
    r = c.post(
        "/v1/publish/fine-tunes",
        json={
            "model": model,
            "model_output_name": "org/out",
            "training_type": tt,
            "status": "running",
        },
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_download(c: httpx.Client, query: str, tries: int = 300) -> httpx.Response:
    """Poll a download until its archive is built (bounded)."""
    for _ in range(tries):
        r = c.get(f"/v1/finetune/download?{query}")
        if r.status_code != 409:
            return r
        assert r.json()["error"]["code"] == "archive_not_ready"
        assert int(r.headers["Retry-After"]) > 0
        time.sleep(0.1)
    raise AssertionError(f"archive for {query} never became ready")


def staging(env: Env) -> list[Path]:
    root = env.settings.data_dir / "uploads"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_upload_check_head_and_idempotence(env: Env) -> None:
    data = os.urandom(3 << 20)
    digest = sha(data)
    assert env.a.post("/v1/publish/blobs/check", json={"sha256": [digest]}).json() == {
        "missing": [digest]
    }
    r = upload(env.a, data)
    assert r.status_code == 201 and r.json() == {"sha256": digest, "size": len(data)}
    assert env.a.head(f"/v1/publish/blobs/{digest}").headers["content-length"] == str(len(data))
    assert upload(env.a, data).status_code == 200
    assert env.a.post("/v1/publish/blobs/check", json={"sha256": [digest]}).json() == {
        "missing": []
    }
    # Another organization learns nothing from our upload, and must prove it has the bytes.
    assert env.b.post("/v1/publish/blobs/check", json={"sha256": [digest]}).json() == {
        "missing": [digest]
    }
    assert env.b.head(f"/v1/publish/blobs/{digest}").status_code == 404
    assert upload(env.b, data[:-1] + b"\0", digest=digest).json()["error"]["code"] == (
        "digest_mismatch"
    )
    assert upload(env.b, data).status_code == 201
    assert staging(env) == []


def test_resumable_upload_in_parts(env: Env) -> None:
    data = os.urandom(5 << 20)
    digest, half = sha(data), 2 << 20
    r = env.a.put(
        f"/v1/publish/blobs/{digest}",
        content=data[:half],
        headers={"Upload-Length": str(len(data))},
    )
    assert r.status_code == 202 and r.json() == {"offset": half}
    head = env.a.head(f"/v1/publish/blobs/{digest}")
    assert head.status_code == 404 and head.headers["upload-offset"] == str(half)
    r = upload(env.a, data, offset=half + 1)
    assert r.status_code == 409 and r.json()["error"]["code"] == "upload_offset_mismatch"
    assert r.headers["upload-offset"] == str(half)
    assert upload(env.a, data, offset=half).status_code == 201


def test_dropped_connection_keeps_what_arrived(env: Env) -> None:
    data = os.urandom(6 << 20)
    digest = sha(data)
    url = urlparse(env.server.url)
    token = env.a.headers["Authorization"]
    with socket.create_connection((url.hostname, url.port)) as s:
        s.sendall(
            (
                f"PUT /v1/publish/blobs/{digest} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: {token}\r\nUpload-Length: {len(data)}\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            ).encode()
        )
        s.sendall(data[: 4 << 20])
        time.sleep(0.5)
    kept = 0
    for _ in range(100):
        head = env.a.head(f"/v1/publish/blobs/{digest}")
        kept = int(head.headers["upload-offset"])
        if kept == 4 << 20:
            break
        time.sleep(0.05)
    assert kept == 4 << 20
    assert upload(env.a, data, offset=kept).status_code == 201
    log = (env.server.data_dir / f"server-{url.port}.log").read_text()
    cut = [line for line in log.splitlines() if digest in line and "PUT" in line]
    assert cut and not any("unhandled error" in line for line in cut)  # not a server error
    assert any('"status": 499' in line for line in cut)


def test_refused_uploads_keep_nothing(env: Env) -> None:
    data = os.urandom(1 << 20)
    r = upload(env.a, data, digest="0" * 64)
    assert r.status_code == 400 and r.json()["error"]["code"] == "digest_mismatch"
    r = upload(env.a, data, total=len(data) - 10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "Upload-Length"
    assert env.a.head(f"/v1/publish/blobs/{sha(data)}").headers["upload-offset"] == "0"
    for bad in ("abc", "A" * 64, "../" + "0" * 61):
        assert env.a.put(
            f"/v1/publish/blobs/{bad}", content=b"x", headers={"Upload-Length": "1"}
        ).status_code in (400, 404)
    assert env.a.put(f"/v1/publish/blobs/{sha(data)}", content=data).status_code == 400
    assert (
        env.a_read.put(
            f"/v1/publish/blobs/{sha(data)}",
            content=data,
            headers={"Upload-Length": str(len(data))},
        ).status_code
        == 403
    )
    assert staging(env) == []
    with open_services(env.settings) as svc:
        assert svc.storage.stat(f"blobs/sha256/{sha(data)[:2]}/{sha(data)}") is None


BAD_MANIFESTS = {
    "dotdot": [{"path": "../evil", "size": 1, "sha256": "0" * 64}],
    "absolute": [{"path": "/etc/passwd", "size": 1, "sha256": "0" * 64}],
    "inner dotdot": [{"path": "a/../../b", "size": 1, "sha256": "0" * 64}],
    "empty part": [{"path": "a//b", "size": 1, "sha256": "0" * 64}],
    "backslash": [{"path": "a\\b", "size": 1, "sha256": "0" * 64}],
    "control": [{"path": "a\nb", "size": 1, "sha256": "0" * 64}],
    "symlink": [{"path": "link", "size": 1, "sha256": "0" * 64, "type": "symlink"}],
    "device": [{"path": "dev", "size": 0, "sha256": "0" * 64, "type": "chardev"}],
    "reserved": [{"path": "SHA256SUMS", "size": 1, "sha256": "0" * 64}],
    "negative": [{"path": "a", "size": -1, "sha256": "0" * 64}],
    "bad digest": [{"path": "a", "size": 1, "sha256": "xyz"}],
    "empty": [],
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_malformed_manifests_store_nothing(env: Env, case: str) -> None:
    ft = new_ft(env.a)
    r = env.a.post(
        f"/v1/publish/fine-tunes/{ft['id']}/checkpoints",
        json={"step": 1, "kind": "model_output_path", "final": True, "files": BAD_MANIFESTS[case]},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_manifest"
    assert env.a.get(f"/v1/fine-tunes/{ft['id']}/checkpoints").json()["data"] == []


def test_manifest_refusals_that_need_blobs(env: Env) -> None:
    ft = new_ft(env.a)
    one, other = os.urandom(100), os.urandom(200)
    assert upload(env.a, one).status_code == 201
    assert upload(env.b, other).status_code == 201  # uploaded by b only
    url = f"/v1/publish/fine-tunes/{ft['id']}/checkpoints"
    cases = [
        [{"path": "a", "size": 101, "sha256": sha(one)}],  # size lies
        [{"path": "a", "size": 200, "sha256": sha(other)}],  # not ours
        [{"path": "a", "size": 100, "sha256": sha(one)}] * 2,  # duplicate path
        [
            {"path": "a", "size": 100, "sha256": sha(one)},
            {"path": "A", "size": 100, "sha256": sha(one)},
        ],  # case collision
        [
            {"path": "a", "size": 100, "sha256": sha(one)},
            {"path": "a/b", "size": 100, "sha256": sha(one)},
        ],  # file and directory
    ]
    for files in cases:
        r = env.a.post(url, json={"step": 1, "kind": "model_output_path", "files": files})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_manifest", files
    r = env.a.post(
        url,
        json={
            "step": 1,
            "kind": "adapter",
            "files": [{"path": "a", "size": 100, "sha256": sha(one)}],
        },
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "kind"
    assert env.a.get(f"/v1/fine-tunes/{ft['id']}/checkpoints").json()["data"] == []
    # b cannot publish into a's fine-tune at all.
    r = env.b.post(
        url,
        json={
            "step": 1,
            "kind": "model_output_path",
            "files": [{"path": "a", "size": 200, "sha256": sha(other)}],
        },
    )
    assert r.status_code == 404


def test_publish_build_download_and_idempotent_manifest(env: Env) -> None:
    files = {"config.json": b'{"a": 1}', "model.safetensors": os.urandom(2 << 20)}
    for data in files.values():
        assert upload(env.a, data).status_code in (200, 201)
    ft = new_ft(env.a)
    body = {"step": 5, "kind": "model_output_path", "final": True, "files": manifest(files)}
    url = f"/v1/publish/fine-tunes/{ft['id']}/checkpoints"
    first = env.a.post(url, json=body)
    assert first.status_code == 201
    again = env.a.post(url, json=body)
    assert again.status_code == 200 and again.json() == first.json()
    changed = {**body, "files": manifest({"config.json": b'{"a": 1}'})}
    assert upload(env.a, b'{"a": 1}').status_code == 200
    assert env.a.post(url, json=changed).status_code == 409
    assert (
        env.a.post(
            f"/v1/publish/fine-tunes/{ft['id']}/events",
            json={"events": [{"type": "job_complete", "message": "done", "step": 5}]},
        ).status_code
        == 201
    )
    assert (
        env.a.post(
            f"/v1/publish/fine-tunes/{ft['id']}/metrics",
            json={"metrics": [{"step": 5, "train/loss": 0.5}]},
        ).status_code
        == 201
    )
    status = env.a.post(
        f"/v1/publish/fine-tunes/{ft['id']}/status", json={"status": "completed"}
    ).json()["status"]
    assert status in ("completed", "compressing")
    r = wait_download(env.a, f"ft_id={ft['id']}&checkpoint=model_output_path")
    assert r.status_code == 200 and r.headers["etag"] == f'"{sha(r.content)}"'
    assert env.a.get(f"/v1/fine-tunes/{ft['id']}").json()["status"] == "completed"
    assert env.a.get(f"/v1/fine-tunes/{ft['id']}/events").json()["data"][0]["type"] == (
        "JOB_COMPLETE"
    )
    assert (
        env.b.get(f"/v1/finetune/download?ft_id={ft['id']}&checkpoint=default").status_code == 404
    )


def test_a_blob_that_rots_after_upload_fails_its_build(env: Env) -> None:
    data = os.urandom(300_000)
    first = env.a.put(
        f"/v1/publish/blobs/{sha(data)}",
        content=data[:100_000],
        headers={"Upload-Length": str(len(data)), "Upload-Offset": "0"},
    )
    assert first.status_code == 202
    assert upload(env.a, data, offset=100_000).status_code == 201
    with open_services(env.settings) as svc:
        # Recorded for the whole blob, although the upload was resumed half-way.
        assert svc.store.blob_xxh3([sha(data)]) == {sha(data): xxhash.xxh3_128_hexdigest(data)}
        stored = Path(svc.storage.local_path(blob_key(sha(data))))
    rotten = bytearray(stored.read_bytes())
    rotten[150_000] ^= 0x01  # one bit, same size: only a digest can tell
    stored.write_bytes(bytes(rotten))
    ft = new_ft(env.a)
    body = {"step": 1, "kind": "model_output_path", "final": True, "files": manifest({"w": data})}
    assert env.a.post(f"/v1/publish/fine-tunes/{ft['id']}/checkpoints", json=body).is_success
    r = wait_download(env.a, f"ft_id={ft['id']}&checkpoint=model_output_path")
    assert r.json()["error"]["code"] == "integrity_error"
    assert "corrupt" in r.json()["error"]["message"]


def test_events_and_metrics_with_ids_survive_a_retried_batch(env: Env) -> None:
    ft = new_ft(env.a)
    url = f"/v1/publish/fine-tunes/{ft['id']}"
    events = {"events": [{"type": "x", "id": "e:0"}, {"type": "y", "id": "e:1"}]}
    assert env.a.post(f"{url}/events", json=events).json() == {"count": 2, "added": 2}
    assert env.a.post(f"{url}/events", json=events).json() == {"count": 2, "added": 0}
    metrics = {"metrics": [{"step": 1, "loss": 2.0, "id": "log:0"}]}
    assert env.a.post(f"{url}/metrics", json=metrics).json() == {"count": 1, "added": 1}
    assert env.a.post(f"{url}/metrics", json=metrics).json() == {"count": 1, "added": 0}
    assert [e["type"] for e in env.a.get(f"/v1/fine-tunes/{ft['id']}/events").json()["data"]][
        -2:
    ] == ["X", "Y"]
    listed = env.a.get(f"/v1/fine-tunes/{ft['id']}/metrics").json()["metrics"]
    assert listed == [{"train/global_step": 1, "loss": 2.0}]  # the id is not a metric
    for bad in ("", "a b", "x" * 101, 7):
        r = env.a.post(f"{url}/events", json={"events": [{"type": "x", "id": bad}]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "events"


def test_idempotency_key_creates_one_fine_tune_per_organization(env: Env) -> None:
    body = {"model": "base", "model_output_name": "a/keyed", "training_type": {"type": "Full"}}
    key = {"Idempotency-Key": "run:1"}
    first = env.a.post("/v1/publish/fine-tunes", json=body, headers=key)
    again = env.a.post("/v1/publish/fine-tunes", json=body, headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other = env.b.post("/v1/publish/fine-tunes", json=body, headers=key)
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]  # per org
    changed = env.a.post("/v1/publish/fine-tunes", json={**body, "suffix": "x"}, headers=key)
    assert changed.status_code == 409 and first.json()["id"] in changed.json()["error"]["message"]
    bad = env.a.post("/v1/publish/fine-tunes", json=body, headers={"Idempotency-Key": "a b"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Idempotency-Key"


def _push_dir(c: httpx.Client, root: Path) -> list[dict[str, Any]]:
    entries = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            assert upload(c, data).status_code in (200, 201)
            entries.append(
                {"path": p.relative_to(root).as_posix(), "size": len(data), "sha256": sha(data)}
            )
    return entries


def test_a_lora_of_an_unregistered_base_is_refused_until_it_is_registered(
    env: Env, tmp_path: Path
) -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    spec = TinyLlama(vocab=64, hidden=32, intermediate=64, layers=1, heads=2, kv_heads=1)
    base_dir = write_model(tmp_path / "base", spec, base_weights(spec, rng))
    adapter = write_adapter(tmp_path / "adapter", spec, rng)
    name = f"{BASE_NAME}-{tmp_path.name}"
    before = env.a.get("/v1/fine-tunes").json()["data"]
    body = {
        "model": name,
        "model_output_name": "org/out",
        "training_type": {"type": "Lora", "lora_r": 8, "lora_alpha": 16},
    }
    r = env.a.post("/v1/publish/fine-tunes", json=body)
    err = r.json()["error"]
    assert r.status_code == 404 and err["code"] == "base_model_not_found", r.text
    assert err["param"] == "model" and f"tunevault base push {name} DIR" in err["message"]
    assert env.a.get("/v1/fine-tunes").json()["data"] == before  # nothing was created
    bad = env.a.post("/v1/publish/fine-tunes", json={**body, "external_base": "yes"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "external_base"
    full = {**body, "training_type": {"type": "Full"}, "external_base": True}
    assert env.a.post("/v1/publish/fine-tunes", json=full).status_code == 400

    r = env.a.post(
        "/v1/publish/base-models", json={"name": name, "files": _push_dir(env.a, base_dir)}
    )
    assert r.status_code == 201
    listed = env.a.get("/v1/publish/base-models").json()["data"]
    assert name in [m["name"] for m in listed]
    assert name not in json.dumps(env.b.get("/v1/publish/base-models").json())
    assert env.b.post("/v1/publish/fine-tunes", json=body).status_code == 404  # a's base only
    ft = new_ft(env.a, lora=True, model=name)
    r = env.a.post(
        f"/v1/publish/fine-tunes/{ft['id']}/checkpoints",
        json={"step": 3, "kind": "adapter", "final": True, "files": _push_dir(env.a, adapter)},
    )
    assert r.status_code == 201
    r = wait_download(env.a, f"ft_id={ft['id']}&checkpoint=merged")
    assert r.status_code == 200, r.text
    assert "step3-merged" in r.headers["content-disposition"]


def test_an_external_base_publishes_the_adapter_and_no_merge(env: Env, tmp_path: Path) -> None:
    import numpy as np

    spec = TinyLlama(vocab=64, hidden=32, intermediate=64, layers=1, heads=2, kv_heads=1)
    adapter = write_adapter(tmp_path / "adapter", spec, np.random.default_rng(2))
    r = env.a.post(
        "/v1/publish/fine-tunes",
        json={
            "model": "elsewhere/base",
            "model_output_name": "org/ext",
            "training_type": {"type": "Lora", "lora_r": 8, "lora_alpha": 16},
            "external_base": True,
        },
    )
    assert r.status_code == 201, r.text
    ft_id = r.json()["id"]
    r = env.a.post(
        f"/v1/publish/fine-tunes/{ft_id}/checkpoints",
        json={"step": 3, "kind": "adapter", "final": True, "files": _push_dir(env.a, adapter)},
    )
    assert r.status_code == 201, r.text
    ckpts = env.a.get(f"/v1/fine-tunes/{ft_id}/checkpoints").json()["data"]
    assert [c["checkpoint_type"] for c in ckpts] == ["Final Adapter"]
    assert wait_download(env.a, f"ft_id={ft_id}&checkpoint=default").status_code == 200
    r = env.a.get(f"/v1/finetune/download?ft_id={ft_id}&checkpoint=merged")
    assert r.status_code == 404 and r.json()["error"]["code"] == "checkpoint_not_found"
    r = env.a.get(f"/v1/finetune/download?ft_id={ft_id}&checkpoint=merged&merged_step=3")
    assert r.status_code == 404 and "external_base" in r.json()["error"]["message"]


def members(archive: bytes) -> dict[str, bytes]:
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive)).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_merged_step_merges_an_intermediate_adapter_on_demand(env: Env, tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    spec = TinyLlama(vocab=64, hidden=32, intermediate=64, layers=1, heads=2, kv_heads=1)
    base_dir = write_model(tmp_path / "base", spec, base_weights(spec, rng))
    adapters = {step: write_adapter(tmp_path / f"a{step}", spec, rng) for step in (1, 3)}
    name = f"{BASE_NAME}-{tmp_path.name}"
    files = _push_dir(env.a, base_dir)
    assert env.a.post("/v1/publish/base-models", json={"name": name, "files": files}).is_success
    ft_id = new_ft(env.a, lora=True, model=name)["id"]
    for step, adapter in adapters.items():
        r = env.a.post(
            f"/v1/publish/fine-tunes/{ft_id}/checkpoints",
            json={
                "step": step,
                "kind": "adapter",
                "final": step == 3,
                "files": _push_dir(env.a, adapter),
            },
        )
        assert r.status_code == 201, r.text
    q = f"ft_id={ft_id}&checkpoint=merged"

    first = env.a.get(f"/v1/finetune/download?{q}&merged_step=1")  # queues its merge
    assert first.status_code == 409 and "merged archive of" in first.json()["error"]["message"]
    r = wait_download(env.a, f"{q}&merged_step=1")
    assert r.status_code == 200, r.text
    assert "step1-merged" in r.headers["content-disposition"]
    merge_lora(base_dir, adapters[1], tmp_path / "want")
    got = members(r.content)
    assert got["model.safetensors"] == (tmp_path / "want" / "model.safetensors").read_bytes()

    final = wait_download(env.a, q)
    assert wait_download(env.a, f"{q}&merged_step=3").content == final.content
    # The spec's rule stays: with a step, `checkpoint` is ignored (the together CLI's case).
    plain = wait_download(env.a, f"{q}&checkpoint_step=1")
    assert "adapter_model.safetensors" in members(plain.content)
    listed = env.a.get(f"/v1/fine-tunes/{ft_id}/checkpoints").json()["data"]
    assert [(c["step"], c["checkpoint_type"]) for c in listed] == [
        (3, "Final Merged"),
        (3, "Final Adapter"),
        (1, "Intermediate"),
    ]
    missing = env.a.get(f"/v1/finetune/download?{q}&merged_step=2")
    assert (
        missing.status_code == 404 and "adapter steps: 1, 3" in missing.json()["error"]["message"]
    )
    foreign = env.b.get(f"/v1/finetune/download?{q}&merged_step=1")
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "fine_tune_not_found"


def test_the_adapter_archive_names_the_fine_tunes_base(env: Env, tmp_path: Path) -> None:
    import numpy as np
    from peft import PeftConfig

    spec = TinyLlama(vocab=64, hidden=32, intermediate=64, layers=1, heads=2, kv_heads=1)
    adapter = write_adapter(tmp_path / "adapter", spec, np.random.default_rng(4))
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/scratch/job-17/base"  # the training machine's
    (adapter / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    uploaded = (adapter / "adapter_config.json").read_bytes()
    r = env.a.post(
        "/v1/publish/fine-tunes",
        json={
            "model": "hub/some-base",
            "model_output_name": "org/named",
            "training_type": {"type": "Lora", "lora_r": 8, "lora_alpha": 16},
            "external_base": True,
        },
    )
    ft_id = r.json()["id"]
    r = env.a.post(
        f"/v1/publish/fine-tunes/{ft_id}/checkpoints",
        json={"step": 2, "kind": "adapter", "final": True, "files": _push_dir(env.a, adapter)},
    )
    assert r.status_code == 201, r.text
    archive = wait_download(env.a, f"ft_id={ft_id}&checkpoint=adapter")
    got = members(archive.content)
    rewritten = json.loads(got["adapter_config.json"])
    assert rewritten == {**config, "base_model_name_or_path": "hub/some-base"}
    sums = dict(line.split("  ")[::-1] for line in got["SHA256SUMS"].decode().splitlines())
    assert all(sums[name] == sha(data) for name, data in got.items() if name != "SHA256SUMS")
    (tmp_path / "out").mkdir()
    for name, data in got.items():
        (tmp_path / "out" / name).write_bytes(data)
    assert PeftConfig.from_pretrained(tmp_path / "out").base_model_name_or_path == "hub/some-base"
    assert named_base(got["adapter_config.json"], "hub/some-base") is None  # named: kept as is

    with open_services(env.settings) as svc:
        stored = svc.storage.local_path(blob_key(sha(uploaded)))
        assert Path(stored).read_bytes() == uploaded  # the upload stays as uploaded
        [ckpt] = svc.store.list_checkpoints(ft_id)
        before = svc.store.get_archive(ckpt.id)
        again = build_archive(svc.store, svc.storage, ckpt.id)  # deterministic
    assert before is not None and (again.sha256, again.storage_key) == (
        before.sha256,
        before.storage_key,
    )
