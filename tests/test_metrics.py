"""The operator's metrics: each one moves when its event happens, on the server and on a
`tunevault worker` serving its own /metrics; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest

from tests.reliability.helpers import wait_for
from tests.support.postgres import free_port
from tests.support.publishing import api_client, publish_files, upload
from tests.support.server import LiveServer, run_server
from tests.test_operations import metric
from tunevault.models import DownloadRecord, Scope
from tunevault.server.observability import Metrics
from tunevault.service.audit import AuditWriter
from tunevault.service.context import open_services
from tunevault.settings import Settings


@dataclass(frozen=True)
class Site:
    settings: Settings
    env: dict[str, str]
    writer: str  # read + publish
    operator: str


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Site:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with open_services(settings) as svc:
        org, ops = svc.store.create_org("m"), svc.store.create_org("operators")
        _, writer = svc.store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
        _, operator = svc.store.create_key(ops.id, "prometheus", [Scope.OPERATOR])
    return Site(settings, {"TUNEVAULT_DATABASE_URL": database_url}, writer, operator)


def scrape(url: str, token: str) -> str:
    r = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.text


def test_server_metrics_move_with_uploads_storage_and_sql(site: Site) -> None:
    with run_server(site.settings.data_dir, env=site.env) as server:
        before = scrape(server.url, site.operator)
        data = os.urandom(3 << 20)
        with api_client(server.url, site.writer) as c:
            upload(c, data)
        after = scrape(server.url, site.operator)
    moved = {
        name: metric(after, name) - metric(before, name)
        for name in (
            "tunevault_upload_bytes_total",
            'tunevault_storage_seconds_count{backend="file",operation="adopt_file"}',
            'tunevault_database_seconds_count{statement="select"}',
            'tunevault_database_seconds_count{statement="insert"}',
            "process_cpu_seconds_total",
        )
    }
    assert moved["tunevault_upload_bytes_total"] == len(data)
    # The verified upload enters storage by a rename into place (the local backend).
    assert moved['tunevault_storage_seconds_count{backend="file",operation="adopt_file"}'] == 1
    assert moved['tunevault_database_seconds_count{statement="select"}'] >= 1
    assert moved['tunevault_database_seconds_count{statement="insert"}'] >= 1  # the blob row
    assert metric(after, "process_resident_memory_bytes") > 1 << 20
    assert metric(after, "process_open_fds") > 0
    assert metric(after, "process_start_time_seconds") > 0
    assert "tunevault_audit_queue_depth 0.0" in after
    assert "tunevault_audit_dropped_total 0.0" in after


def test_audit_queue_depth_and_drops_are_counted(tmp_path: Path) -> None:
    """A stalled database fills the audit queue: the gauge shows the backlog, the counter
    the records a full queue refused (no writer runs here: the stall, made certain)."""
    with open_services(Settings(data_dir=tmp_path)) as svc:
        writer, metrics = AuditWriter(svc.store), Metrics()
        metrics.watch_audit(writer)

        async def fill() -> None:
            writer.queue = asyncio.Queue(2)
            for i in range(5):
                writer.add(_record(f"ft-{i}"))

        asyncio.run(fill())
        text = generate_latest(metrics.registry).decode()
    assert "tunevault_audit_queue_depth 2.0" in text
    assert "tunevault_audit_dropped_total 3.0" in text


def _record(ft_id: str) -> DownloadRecord:
    return DownloadRecord(
        datetime.now(UTC),
        "org",
        "key",
        ft_id,
        1,
        "adapter",
        "0" * 64,
        0,
        1,
        1,
        200,
        "proxy",
        None,
        None,
    )


def start_worker(site: Site, address: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tunevault", "worker", "--metrics-address", address],
            env={
                **os.environ,
                **site.env,
                "TUNEVAULT_DATA_DIR": str(site.settings.data_dir),
                "TUNEVAULT_JOB_POLL_SECONDS": "0.05",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def server(site: Site) -> Iterator[LiveServer]:
    env = {**site.env, "TUNEVAULT_BUILD_WORKERS": "0"}  # builds wait for `tunevault worker`
    with run_server(site.settings.data_dir, env=env) as live:
        yield live


def test_worker_exports_metrics_and_logs_a_lease_takeover(
    site: Site, server: LiveServer, tmp_path: Path
) -> None:
    with api_client(server.url, site.writer) as c:
        ft_id = publish_files(c, {"weights.bin": os.urandom(1 << 20)}, name="m/out")
    with open_services(site.settings) as svc:  # a worker claims the job, then dies
        job = svc.store.claim_job("dead-worker", 0.01)
        assert job is not None
    address, log = f"127.0.0.1:{free_port()}", tmp_path / "worker.log"
    worker = start_worker(site, address, log)
    try:
        url = f"http://{address}"
        wait_for(lambda: _answers(url), "the worker's metrics port")
        assert httpx.get(url + "/metrics").status_code == 401
        r = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {site.writer}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
        query = f"/v1/finetune/download?ft_id={ft_id}&checkpoint=model_output_path"
        with api_client(server.url, site.writer) as c:
            wait_for(lambda: c.get(query).status_code == 200, "the taken-over build")
        text = scrape(url, site.operator)
    finally:
        worker.terminate()
        worker.wait(30)
    assert metric(text, "tunevault_lease_takeovers_total") == 1
    assert metric(text, 'tunevault_build_seconds_count{kind="archive",outcome="done"}') == 1
    assert metric(text, 'tunevault_storage_seconds_count{backend="file",operation="commit"}') >= 1
    assert metric(text, 'tunevault_database_seconds_count{statement="update"}') >= 1
    assert metric(text, "process_resident_memory_bytes") > 0
    warnings = [json.loads(line) for line in log.read_text().splitlines() if "taken over" in line]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert (warnings[0]["job_id"], warnings[0]["old_owner"]) == (job.id, "dead-worker")
    assert warnings[0]["owner"] != "dead-worker"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz").status_code == 200
    except httpx.TransportError:
        return False


def test_a_bad_metrics_address_is_refused_naming_the_form(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tunevault", "worker", "--metrics-address", "nowhere"],
        env={**os.environ, "TUNEVAULT_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "HOST:PORT" in r.stderr
