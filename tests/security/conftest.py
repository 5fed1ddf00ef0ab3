"""A throwaway live server for the security tests: the fuzzer may delete and cancel freely.

The `fuzz` organization owns a published full fine-tune with a built archive (8 MiB, so a
download can be dropped half-way), events and metrics, so generated requests reach real
rows, not only 404s; the seeded `demo` organization is a neighbour whose ids must never
leak into `fuzz`'s answers. The metadata lives in PostgreSQL, the stricter of the two
databases (it refuses NUL characters that SQLite stores).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support.postgres import create_database
from tests.support.server import LiveServer, run_server
from tunevault.models import Scope
from tunevault.service.context import open_services
from tunevault.settings import Settings


@dataclass(frozen=True)
class Target:
    server: LiveServer
    token: str  # fuzz organization, read + publish
    read_token: str  # fuzz, read only
    revoked_token: str  # fuzz, revoked
    admin_token: str  # fuzz, admin
    other_token: str  # demo organization, read + publish
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
    files = {"config.json": b'{"model_type": "llama"}', "model.safetensors": os.urandom(8 << 20)}
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
def target(tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str) -> Iterator[Target]:
    from tunevault.service.demo import seed_demo  # imports the merge engine: only when needed

    data_dir = tmp_path_factory.mktemp("security")
    db = create_database(pg_admin_url, "security")
    with open_services(Settings(data_dir=data_dir, database_url=db)) as svc:
        demo, demo_fts = seed_demo(svc)
        _, other_token = svc.store.create_key(demo.id, "rw", [Scope.READ, Scope.PUBLISH])
        org = svc.store.create_org("fuzz")
        _, token = svc.store.create_key(org.id, "fuzz", [Scope.READ, Scope.PUBLISH])
        _, read_token = svc.store.create_key(org.id, "ro", [Scope.READ])
        _, admin_token = svc.store.create_key(org.id, "admin", [Scope.ADMIN])
        revoked, revoked_token = svc.store.create_key(org.id, "old", [Scope.READ, Scope.PUBLISH])
        svc.store.revoke_key(revoked.id)
    env = {
        "TUNEVAULT_JOB_POLL_SECONDS": "0.1",
        "TUNEVAULT_DATABASE_URL": db,
        # The fuzzer sends thousands of keyless requests from one address.
        "TUNEVAULT_AUTH_FAILURES_PER_MINUTE": "0",
    }
    with run_server(data_dir, env=env) as server:
        with httpx.Client(
            base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as c:
            own = (_publish(c),)
        yield Target(
            server=server,
            token=token,
            read_token=read_token,
            revoked_token=revoked_token,
            admin_token=admin_token,
            other_token=other_token,
            ft_ids=own,
            foreign_ft_ids=tuple(ft.id for ft in demo_fts),
        )
