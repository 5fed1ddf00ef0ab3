"""Builds start when their input is committed, and a waiting download hears how long.

The wake-up is checked with the fallback poll set to an hour: a build that still finishes
within the bounded wait was woken, not polled. The wait is read from a live server while
the test holds the queue still (no workers) and reports progress itself, as a worker does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.reliability.helpers import wait_for
from tests.support.publishing import publish_files
from tests.support.server import run_server
from tunevault.metadata import tables as t
from tunevault.metadata.buildqueue import ActiveJob
from tunevault.models import Scope
from tunevault.service.buildwait import ASSUMED_RATE, estimate
from tunevault.service.context import Services, open_services
from tunevault.service.worker import Worker
from tunevault.settings import Settings

HOUR = "3600"


@dataclass(frozen=True)
class Env:
    svc: Services
    client: httpx.Client


@contextmanager
def serving(database_url: str, tmp_path: Path, **env: str) -> Iterator[Env]:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with open_services(settings) as svc:
        org = svc.store.create_org("q")
        _, token = svc.store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
        with (
            run_server(
                settings.data_dir, env={"TUNEVAULT_DATABASE_URL": database_url, **env}
            ) as server,
            httpx.Client(
                base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
            ) as client,
        ):
            yield Env(svc, client)


def download(c: httpx.Client, ft_id: str) -> httpx.Response:
    return c.get(f"/v1/finetune/download?ft_id={ft_id}&checkpoint=model_output_path")


def ready(c: httpx.Client, ft_id: str) -> bool:
    r = download(c, ft_id)
    assert r.status_code in (200, 409), r.text
    return r.status_code == 200


def test_a_build_starts_at_once_with_the_poll_an_hour_away(
    database_url: str, tmp_path: Path
) -> None:
    with serving(database_url, tmp_path, TUNEVAULT_JOB_POLL_SECONDS=HOUR) as env:
        for step in (1, 2):  # the worker is idle between them: each is woken for
            ft_id = publish_files(env.client, {"w.bin": os.urandom(1 << 20)}, step=step)
            wait_for(lambda ft_id=ft_id: ready(env.client, ft_id), "a build woken by its commit")


def test_a_worker_process_is_woken_through_postgresql(pg_admin_url: str, tmp_path: Path) -> None:
    from tests.support.postgres import create_database

    url = create_database(pg_admin_url, "wakeup")
    with serving(url, tmp_path, TUNEVAULT_BUILD_WORKERS="0") as env:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tunevault", "worker", "--data-dir", str(tmp_path / "data")],
            env={**os.environ, "TUNEVAULT_DATABASE_URL": url, "TUNEVAULT_JOB_POLL_SECONDS": HOUR},
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "worker.log").open("wb"),
        )
        try:
            for step in (1, 2):
                ft_id = publish_files(env.client, {"w.bin": os.urandom(1 << 20)}, step=step)
                wait_for(lambda ft_id=ft_id: ready(env.client, ft_id), "a NOTIFY-woken build")
        finally:
            worker.terminate()
            assert worker.wait(30) == 0  # the stop wakes the idle worker too


def test_a_waiting_download_hears_its_place_and_progress(database_url: str, tmp_path: Path) -> None:
    with serving(database_url, tmp_path, TUNEVAULT_BUILD_WORKERS="0") as env:
        sizes = (1 << 20, 2 << 20, 3 << 20)
        ids = [publish_files(env.client, {"w.bin": os.urandom(n)}) for n in sizes]
        r = download(env.client, ids[2])
        assert r.status_code == 409 and r.json()["error"]["code"] == "archive_not_ready"
        assert ": queued, 2 ahead, about " in r.json()["error"]["message"]
        assert r.headers["Tunevault-Build-State"] == "queued"
        assert r.headers["Tunevault-Queue-Ahead"] == "2"
        assert "Tunevault-Build-Progress" not in r.headers
        assert (
            1 <= int(r.headers["Retry-After"]) <= 10 and int(r.headers["Tunevault-Build-Eta"]) >= 1
        )

        job = env.svc.store.claim_job("test-worker", 60)  # the oldest: the first fine-tune's
        assert job is not None
        env.svc.store.set_job_progress(job.id, "test-worker", 2 << 18, 1 << 20)
        r = download(env.client, ids[0])
        assert "model_output_path archive of" in r.json()["error"]["message"]
        assert ": building, 50%, about " in r.json()["error"]["message"]
        assert r.headers["Tunevault-Build-State"] == "building"
        assert r.headers["Tunevault-Build-Progress"] == "0.50"
        assert r.headers["Tunevault-Queue-Ahead"] == "0"
        assert download(env.client, ids[2]).headers["Tunevault-Queue-Ahead"] == "1"
        env.svc.store.finish_job(job.id, "test-worker", error_code="x", retry=True)

        worker = Worker(env.svc)
        while worker.run_once():
            pass
        assert all(ready(env.client, ft_id) for ft_id in ids)
        with env.svc.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.build_jobs.c.progress_done, t.build_jobs.c.progress_total).order_by(
                    t.build_jobs.c.id
                )
            ).all()
        assert [tuple(r) for r in rows] == [(n, n) for n in sizes]  # recorded by the builds


T0 = datetime(2025, 1, 1, tzinfo=UTC)


def job(
    id_: int,
    state: str,
    size: int,
    *,
    done: int | None = None,
    started: float | None = None,
    kind: str = "archive",
) -> ActiveJob:
    return ActiveJob(
        id=id_,
        checkpoint_id=100 + id_,
        kind=kind,
        state=state,
        started_at=None if started is None else T0 + timedelta(seconds=started),
        progress_done=done,
        progress_total=None if done is None else size,
        input_bytes=size,
    )


def test_the_estimate_follows_the_build_rate_and_the_queue() -> None:
    at = T0 + timedelta(seconds=10)
    running = job(1, "running", 1000, done=400, started=8)  # 40% in 2 s: 3 s to go
    wait = estimate([running], 101, 1, at)
    assert wait.describe() == "building, 40%, about 3 s"
    assert wait.headers() == {
        "Retry-After": "2",
        "Tunevault-Build-State": "building",
        "Tunevault-Queue-Ahead": "0",
        "Tunevault-Build-Eta": "3",
        "Tunevault-Build-Progress": "0.40",
    }
    mb = ASSUMED_RATE  # queued builds are sized at the assumed rate: 1 s per ASSUMED_RATE
    queue = [running, job(2, "queued", 2 * mb), job(3, "queued", mb), job(4, "queued", 4 * mb)]
    assert estimate(queue, 103, 1, at).describe() == "queued, 1 ahead, about 6 s"  # 3 + 2 + 1
    assert estimate(queue, 103, 2, at).seconds == pytest.approx(3.5)  # two workers share
    merge = job(5, "queued", mb, kind="merge")  # a merge reads its base and packs its output
    assert estimate([merge], 105, 1, at).seconds == pytest.approx(2)
    fresh = job(6, "running", 4 * mb, done=0, started=9)  # no rate of its own yet
    assert estimate([fresh], 106, 1, at).describe() == "building, 0%, about 4 s"
    long = estimate([job(7, "queued", 100 * mb)], 107, 1, at)
    assert (long.retry_after, long.eta) == (10, 100)  # asks again while it waits
