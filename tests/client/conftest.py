"""A live tunevault seeded with synthetic checkpoints, and a fault proxy in front of it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.client.seeding import Seeded, archive_bytes, seed_store
from tests.support.faultproxy import FaultProxy
from tests.support.server import LiveServer, run_server
from tunevault.client import Client
from tunevault.client.fetch import RetryPolicy
from tunevault.models import Kind
from tunevault.service.context import open_services

MiB = 1 << 20
# Bigger than Together's 10 MiB resume step, so cuts inside and after it both happen.
SIZES = {
    "model-00001-of-00002.safetensors": 14 * MiB,
    "model-00002-of-00002.safetensors": 9 * MiB + 12345,
    "config.json": 700,
    "tokenizer/tokenizer.json": 300 * 1024,
}
FAST = RetryPolicy(backoff=0.01, max_backoff=0.05)


@dataclass(frozen=True)
class Live:
    server: LiveServer
    seeded: Seeded
    data: bytes  # the archive's exact bytes
    pending_ft: str  # a fine-tune whose checkpoint has no archive yet

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ft(self) -> str:
        return self.seeded.ft.id

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def filename(self) -> str:
        return "llama-ft-step100-model_output_path.tar.zst"


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("client-server")
    seeded = seed_store(data_dir, SIZES)
    with open_services(seeded.settings) as svc:
        org = svc.store.get_org_by_name("acme")
        assert org is not None
        pending = svc.store.create_fine_tune(
            org.id,
            model="m",
            model_output_name="acme/pending",
            training_type="Full",
            status="completed",
        )
        # A checkpoint without an archive and without a build job: 409 archive_not_ready.
        svc.store.add_checkpoint(pending.id, 5, Kind.MODEL_OUTPUT, True, [])
    # Tests here rebuild an archive between two runs and expect the second to see it at
    # once: no resolution cache (its own tests are tests/server/test_resolve_cache.py).
    with run_server(data_dir, env={"TUNEVAULT_RESOLVE_CACHE_SECONDS": "0"}) as server:
        yield Live(server, seeded, archive_bytes(seeded), pending.id)


@pytest.fixture
def proxy(live: Live) -> Iterator[FaultProxy]:
    with FaultProxy(live.url) as p:
        yield p


@pytest.fixture
def client(live: Live, proxy: FaultProxy) -> Client:
    return Client(proxy.url, live.seeded.token)


def leftovers(directory: Path) -> list[str]:
    """Temporary files a download may have left: none are allowed after success."""
    return sorted(
        p.name for p in directory.iterdir() if p.name.endswith((".part", ".part.tv", ".new"))
    )
