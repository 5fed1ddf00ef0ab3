"""Build workers as separate processes: killed mid-build or mid-merge, replaced, never
doubled up."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import zstandard

from tests.reliability.helpers import wait_for
from tests.support.publishing import publish_files
from tests.support.server import run_server
from tunevault.archive.read import unpack_stream
from tunevault.models import ArchiveFormat, BuildJob, JobKind, Kind, Scope
from tunevault.service.context import Services, open_services
from tunevault.service.demo import TinyLlama, base_weights, write_adapter, write_model
from tunevault.service.publishing import publish_directory, put_directory, register_base_model
from tunevault.settings import Settings


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Services, httpx.Client]]:
    """The test's own view of the store and storage (opened once: tests poll it), and a
    client of a server without in-process workers: builds wait for `tunevault worker`s."""
    settings = Settings(data_dir=tmp_path / "data")
    with open_services(settings) as svc:
        org = svc.store.create_org("w")
        _, token = svc.store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
        with (
            run_server(settings.data_dir, env={"TUNEVAULT_BUILD_WORKERS": "0"}) as server,
            httpx.Client(
                base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {token}"}
            ) as client,
        ):
            yield svc, client


def start_worker(settings: Settings, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tunevault", "worker", "--data-dir", str(settings.data_dir)],
        env={**os.environ, "TUNEVAULT_JOB_POLL_SECONDS": "0.05", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def publish(c: httpx.Client, files: dict[str, bytes], step: int = 1) -> str:
    return publish_files(c, files, step, name="w/out")


def jobs(svc: Services, ft_id: str) -> list[BuildJob]:
    return [
        j for c in svc.store.list_checkpoints(ft_id) for j in svc.store.jobs_for_checkpoint(c.id)
    ]


def test_killed_worker_is_replaced_and_nothing_partial_is_visible(
    setup: tuple[Services, httpx.Client],
) -> None:
    svc, c = setup
    settings = svc.settings
    payload = os.urandom(24 << 20)
    ft_id = publish(c, {"weights.bin": payload})
    q = f"/v1/finetune/download?ft_id={ft_id}&checkpoint=model_output_path"
    assert c.get(f"/v1/fine-tunes/{ft_id}").json()["status"] == "compressing"
    r = c.get(q)
    assert r.status_code == 409 and r.json()["error"]["code"] == "archive_not_ready"
    # zstd level 19 makes this build take seconds: long enough to kill it mid-way.
    slow = start_worker(settings, TUNEVAULT_ZSTD_LEVEL="19", TUNEVAULT_JOB_LEASE_SECONDS="2")
    wait_for(lambda: jobs(svc, ft_id)[0].state == "running", "the first worker's claim")
    time.sleep(0.5)
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    assert jobs(svc, ft_id)[0].state == "running"  # it died holding the lease
    assert list(svc.storage.list("archives/")) == []
    assert c.get(q).status_code == 409
    fast = start_worker(settings, TUNEVAULT_ZSTD_LEVEL="1", TUNEVAULT_JOB_LEASE_SECONDS="2")
    try:
        wait_for(lambda: c.get(q).status_code == 200, "the second worker's archive")
    finally:
        fast.terminate()
        fast.wait(30)
    job = jobs(svc, ft_id)[0]
    assert (job.state, job.attempts) == ("done", 2)
    body = c.get(q).content
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.extractfile("weights.bin")
        assert member is not None and member.read() == payload
    assert c.get(f"/v1/fine-tunes/{ft_id}").json()["status"] == "completed"


def test_two_workers_never_build_the_same_job(setup: tuple[Services, httpx.Client]) -> None:
    svc, c = setup
    workers = [start_worker(svc.settings) for _ in range(2)]
    try:
        ids = [publish(c, {f"f{i}.bin": os.urandom(1 << 20)}, step=i) for i in range(6)]
        wait_for(lambda: all(j.state == "done" for i in ids for j in jobs(svc, i)), "all builds")
    finally:
        for w in workers:
            w.terminate()
            w.wait(30)
    assert [j.attempts for i in ids for j in jobs(svc, i)] == [1] * 6


def test_a_worker_killed_mid_merge_leaves_neither_archive_nor_manifest(
    setup: tuple[Services, httpx.Client], tmp_path: Path
) -> None:
    """The one-pass merge records the merged manifest and the archive only at the end: a
    worker killed in the middle leaves neither, and the next one merges from the start."""
    svc, c = setup
    spec = TinyLlama(vocab=2048, hidden=256, intermediate=688, layers=4)
    org_id = svc.store.get_org_by_name("w").id  # type: ignore[union-attr]
    base = write_model(tmp_path / "base", spec, base_weights(spec, np.random.default_rng(0)))
    register_base_model(svc, org_id, "w/base", put_directory(svc.store, svc.storage, org_id, base))
    ft = svc.store.create_fine_tune(
        org_id, model="w/base", model_output_name="w/lora", training_type="Lora"
    )
    adapter = write_adapter(tmp_path / "adapter", spec, np.random.default_rng(1))
    publish_directory(svc, ft, adapter, step=1, kind=Kind.ADAPTER, final=True)
    merged = svc.store.find_checkpoint(ft.id, 1, Kind.MERGED)
    assert merged is not None

    def merge_job() -> BuildJob:
        (job,) = [j for j in svc.store.jobs_for_checkpoint(merged.id) if j.kind == JobKind.MERGE]
        return job

    # zstd level 19 makes the merge's packing take seconds: long enough to kill it mid-way.
    slow = start_worker(svc.settings, TUNEVAULT_ZSTD_LEVEL="19", TUNEVAULT_JOB_LEASE_SECONDS="2")
    wait_for(lambda: merge_job().state == "running", "the first worker's merge")
    time.sleep(0.5)
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    assert merge_job().state == "running"  # it died holding the lease
    assert svc.store.get_archive(merged.id) is None
    assert svc.store.get_checkpoint(merged.id).files == ()  # type: ignore[union-attr]
    q = f"/v1/finetune/download?ft_id={ft.id}&checkpoint=merged"
    assert c.get(q).status_code == 409
    fast = start_worker(svc.settings, TUNEVAULT_JOB_LEASE_SECONDS="2")
    try:
        wait_for(lambda: c.get(q).status_code == 200, "the second worker's merged archive")
    finally:
        fast.terminate()
        fast.wait(30)
    assert (merge_job().state, merge_job().attempts) == ("done", 2)
    archive = svc.store.get_archive(merged.id)
    assert archive is not None and archive.format == ArchiveFormat.SUMS_LAST
    (tmp_path / "x").mkdir()
    got = unpack_stream(io.BytesIO(c.get(q).content), tmp_path / "x")
    files = svc.store.get_checkpoint(merged.id).files  # type: ignore[union-attr]
    assert got.files == {f.path: f.sha256 for f in files}
