"""Shared fixtures: real PostgreSQL, and a real tunevault server seeded with the demo data."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.postgres import create_database, run_postgres
from tests.support.seaweed import SeaweedFS, run_seaweedfs
from tests.support.server import LiveServer, run_server
from tunevault.models import Archive, FineTune, Kind, Scope
from tunevault.service.context import open_services
from tunevault.settings import Settings


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    with run_postgres() as url:
        yield url


_db_counter = iter(range(10**6))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind: every metadata test runs on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    admin = request.getfixturevalue("pg_admin_url")
    return create_database(admin, f"t{next(_db_counter)}")


@dataclass(frozen=True)
class Demo:
    server: LiveServer
    settings: Settings
    token: str  # demo org, read + publish
    read_token: str  # demo org, read only
    revoked_token: str
    other_token: str  # another organization, read + publish
    lora: FineTune
    full: FineTune
    other_ft: FineTune
    archives: dict[tuple[str, int, Kind], Archive]

    @property
    def url(self) -> str:
        return self.server.url

    def archive_bytes(self, ft: FineTune, step: int, kind: Kind) -> bytes:
        archive = self.archives[(ft.id, step, kind)]
        with open_services(self.settings) as svc:
            data = b"".join(svc.storage.iter_range(archive.storage_key))
        assert hashlib.sha256(data).hexdigest() == archive.sha256
        return data


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    from tunevault.service.demo import seed_demo  # imports the merge engine: only when needed

    data_dir = tmp_path_factory.mktemp("demo")
    settings = Settings(data_dir=data_dir)
    with open_services(settings) as svc:
        store = svc.store
        org, fts = seed_demo(svc)
        lora = next(ft for ft in fts if ft.is_lora)
        full = next(ft for ft in fts if not ft.is_lora)
        _, token = store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
        _, read_token = store.create_key(org.id, "ro", [Scope.READ])
        revoked, revoked_token = store.create_key(org.id, "old", [Scope.READ])
        store.revoke_key(revoked.id)
        other = store.create_org("other")
        _, other_token = store.create_key(other.id, "rw", [Scope.READ, Scope.PUBLISH])
        other_ft = store.create_fine_tune(
            other.id,
            model="m",
            model_output_name="other/secret",
            training_type="Full",
            status="completed",
        )
        archives = {}
        for ft in (lora, full):
            for c in store.list_checkpoints(ft.id):
                archive = store.get_archive(c.id)
                assert archive is not None
                archives[(ft.id, c.step, c.kind)] = archive
    with run_server(data_dir) as server:
        yield Demo(
            server=server,
            settings=settings,
            token=token,
            read_token=read_token,
            revoked_token=revoked_token,
            other_token=other_token,
            lora=lora,
            full=full,
            other_ft=other_ft,
            archives=archives,
        )


@dataclass(frozen=True)
class FreshOrg:
    id: str
    token: str  # read + publish
    read_token: str


_fresh_orgs = iter(range(10**6))


@pytest.fixture
def fresh_org(demo: Demo) -> FreshOrg:
    """An organization of this test's own on the shared demo server: a test that writes
    uses it, so no other test sees its rows, in whatever order they run."""
    with open_services(demo.settings) as svc:
        org = svc.store.create_org(f"fresh-{next(_fresh_orgs)}")
        _, token = svc.store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
        _, read_token = svc.store.create_key(org.id, "ro", [Scope.READ])
    return FreshOrg(org.id, token, read_token)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs: a real ENOSPC (needs root, as in CI)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One real S3 (SeaweedFS) on loopback for the session, started when first asked for;
    each test takes a fresh bucket of its own (`SeaweedFS.bucket`)."""
    with run_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def settings_on_each_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings on local disk, then on a fresh SeaweedFS bucket (SQLite either way)."""
    if request.param == "local":
        yield Settings(data_dir=tmp_path / "data")
        return
    seaweed: SeaweedFS = request.getfixturevalue("seaweedfs")
    seaweed.patch_env(request.getfixturevalue("monkeypatch"))
    with seaweed.bucket() as bucket:
        yield Settings(data_dir=tmp_path / "data", storage_url=seaweed.storage_url(bucket))
