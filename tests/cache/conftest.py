"""A store on local disk or SeaweedFS with a live server over it (builds left to the
test's own workers), and the seeding the cache tests share."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.seaweed import SeaweedFS
from tests.support.seeding import publish_and_build
from tests.support.server import LiveServer, run_server
from tunevault.models import Archive, FineTune, Scope
from tunevault.service.context import Services, open_services
from tunevault.service.worker import Worker
from tunevault.settings import Settings
from tunevault.storage import Unsupported

RESPOND_ASYNC = {"Prefer": "respond-async"}  # as tunevault's client: 409 at once, never held


@dataclass
class Store:
    svc: Services
    server: LiveServer
    token: str
    org_id: str
    env: dict[str, str]  # what another server or worker process over this store needs

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url,
            timeout=120,
            headers={"Authorization": f"Bearer {self.token}", **headers},
        )

    def with_settings(self, **changes: object) -> Services:
        """The same store and storage under other settings (the budget, its grace)."""
        settings = self.svc.settings.model_copy(update=changes)
        return Services(settings=settings, store=self.svc.store, storage=self.svc.storage)

    def fine_tune(
        self, name: str, tmp: Path, size: int = 64 << 10, svc: Services | None = None
    ) -> tuple[FineTune, Archive]:
        """A completed full fine-tune of `size` random bytes, built (under `svc`'s
        settings when given)."""
        src = tmp / name
        src.mkdir()
        (src / "w.bin").write_bytes(os.urandom(size))
        ft = self.svc.store.create_fine_tune(
            self.org_id,
            model="base",
            model_output_name=f"cache/{name}",
            training_type="Full",
            status="completed",
        )
        return ft, publish_and_build(svc or self.svc, ft, src)

    def build_all(self) -> int:
        worker, n = Worker(self.svc), 0
        while worker.run_once():
            n += 1
        return n


def on_local_disk(store: Store) -> bool:
    try:
        store.svc.storage.local_path("probe")
    except Unsupported:
        return False
    return True


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    env = {"TUNEVAULT_BUILD_WORKERS": "0"}
    settings = Settings(data_dir=tmp_path / "data")
    with contextlib.ExitStack() as stack:
        if request.param == "s3":
            seaweed: SeaweedFS = request.getfixturevalue("seaweedfs")
            seaweed.patch_env(request.getfixturevalue("monkeypatch"))
            bucket = stack.enter_context(seaweed.bucket())
            url = seaweed.storage_url(bucket)
            settings = Settings(data_dir=tmp_path / "data", storage_url=url)
            env.update({**seaweed.env(), "TUNEVAULT_STORAGE_URL": url})
        env["TUNEVAULT_DATABASE_URL"] = settings.resolved_database_url()
        env["TUNEVAULT_STORAGE_URL"] = settings.resolved_storage_url()
        svc = stack.enter_context(open_services(settings))
        org = svc.store.create_org("cache")
        _, token = svc.store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
        server = stack.enter_context(run_server(settings.data_dir, env=env))
        yield Store(svc, server, token, org.id, env)
