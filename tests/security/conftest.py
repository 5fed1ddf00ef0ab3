"""A throwaway live server for the security tests: the fuzzer may delete and cancel freely.

The `fuzz` organization owns a published full fine-tune with a built archive, events and
metrics (so generated requests reach real rows, not only 404s); the seeded `demo`
organization is a neighbour whose ids must never leak into `fuzz`'s answers.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support.server import LiveServer, run_server
from tunevault.models import Scope
from tunevault.services import open_services
from tunevault.settings import Settings


@dataclass(frozen=True)
class Target:
    server: LiveServer
    token: str  # fuzz organization, read + publish
    ft_ids: tuple[str, ...]  # fuzz's own fine-tunes
    foreign_ft_ids: tuple[str, ...]  # the demo organization's

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _publish(c: httpx.Client) -> str:
    """A full fine-tune with one final checkpoint, published the way `tunevault push` does."""
    files = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\0" * 4096}
    for data in files.values():
        digest = hashlib.sha256(data).hexdigest()
        r = c.put(
            f"/v1/publish/blobs/{digest}", content=data, headers={"Upload-Length": str(len(data))}
        )
        r.raise_for_status()
    ft = c.post(
        "/v1/publish/fine-tunes",
        json={"model": "base", "model_output_name": "fuzz/full", "training_type": {"type": "Full"}},
    ).json()
    manifest = [
        {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for p, d in files.items()
    ]
    body = {"step": 5, "kind": "model_output_path", "final": True, "files": manifest}
    c.post(f"/v1/publish/fine-tunes/{ft['id']}/checkpoints", json=body).raise_for_status()
    c.post(
        f"/v1/publish/fine-tunes/{ft['id']}/events",
        json={"events": [{"type": "CHECKPOINT_SAVE", "message": "saved", "step": 5}]},
    ).raise_for_status()
    c.post(
        f"/v1/publish/fine-tunes/{ft['id']}/metrics",
        json={"metrics": [{"step": s, "loss": 1.0 / (s + 1)} for s in range(6)]},
    ).raise_for_status()
    c.post(f"/v1/publish/fine-tunes/{ft['id']}/status", json={"status": "completed"})
    for _ in range(300):  # bounded: the build worker packs two tiny files
        q = f"/v1/finetune/download?ft_id={ft['id']}&checkpoint=model_output_path"
        if c.head(q).status_code == 200:
            break
        time.sleep(0.1)
    else:
        raise TimeoutError("the fuzz archive was not built")
    return str(ft["id"])


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    from tunevault.demo import seed_demo  # imports the merge engine: only when needed

    data_dir = tmp_path_factory.mktemp("security")
    with open_services(Settings(data_dir=data_dir)) as svc:
        _, demo_fts = seed_demo(svc)
        org = svc.store.create_org("fuzz")
        _, token = svc.store.create_key(org.id, "fuzz", [Scope.READ, Scope.PUBLISH])
    with run_server(data_dir, env={"TUNEVAULT_JOB_POLL_SECONDS": "0.1"}) as server:
        with httpx.Client(
            base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as c:
            own = (_publish(c),)
        yield Target(server, token, own, tuple(ft.id for ft in demo_fts))
