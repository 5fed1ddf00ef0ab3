"""Publishing over HTTP, as a training job does: for tests and benches that need it."""

from __future__ import annotations

import hashlib

import httpx


def api_client(url: str, token: str, timeout: float = 60) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=timeout, headers={"Authorization": f"Bearer {token}"})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create_fine_tune(c: httpx.Client, name: str = "test/out") -> str:
    r = c.post(
        "/v1/publish/fine-tunes",
        json={
            "model": "base",
            "model_output_name": name,
            "training_type": {"type": "Full"},
            "status": "running",
        },
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def upload(c: httpx.Client, data: bytes) -> None:
    r = c.put(
        f"/v1/publish/blobs/{sha(data)}", content=data, headers={"Upload-Length": str(len(data))}
    )
    assert r.status_code in (200, 201), r.text


def commit(c: httpx.Client, ft_id: str, files: dict[str, bytes], step: int = 1) -> httpx.Response:
    """Post the final model_output_path manifest of `files` (their blobs uploaded)."""
    entries = [{"path": p, "size": len(d), "sha256": sha(d)} for p, d in files.items()]
    return c.post(
        f"/v1/publish/fine-tunes/{ft_id}/checkpoints",
        json={"step": step, "kind": "model_output_path", "final": True, "files": entries},
    )


def complete(c: httpx.Client, ft_id: str) -> None:
    r = c.post(f"/v1/publish/fine-tunes/{ft_id}/status", json={"status": "completed"})
    assert r.status_code == 200, r.text


def publish_files(
    c: httpx.Client, files: dict[str, bytes], step: int = 1, name: str = "test/out"
) -> str:
    """A new fine-tune with `files` as its final checkpoint, marked completed."""
    ft_id = create_fine_tune(c, name)
    for data in files.values():
        upload(c, data)
    r = commit(c, ft_id, files, step)
    assert r.status_code == 201, r.text
    complete(c, ft_id)
    return ft_id
