"""Scale-out: replicas on PostgreSQL and S3 (SeaweedFS), the three serve modes, nginx.

Everything is real and on loopback: a PostgreSQL cluster, a SeaweedFS S3 server, several
`tunevault serve` processes, `tunevault worker` processes, nginx, and the together CLI.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import together

from tests.support.nginx import nginx_binary, run_nginx, x_accel_locations
from tests.support.postgres import create_database
from tests.support.publishing import api_client, commit, upload
from tests.support.seaweed import SeaweedFS, run_seaweedfs
from tests.support.server import LiveServer, run_server
from tests.support.together import together_download
from tunevault.models import FineTune, Kind, Scope
from tunevault.service.context import open_services
from tunevault.service.demo import seed_demo
from tunevault.settings import Settings


@dataclass(frozen=True)
class Cluster:
    env: dict[str, str]  # what every replica and worker process gets
    settings: Settings
    token: str
    lora: FineTune
    full: FineTune
    seaweed: SeaweedFS


@pytest.fixture(scope="module")
def cluster(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    with run_seaweedfs(root / "seaweed") as seaweed, seaweed.bucket() as bucket:
        settings = Settings(
            data_dir=root / "seed",
            database_url=create_database(pg_admin_url, "scaleout"),
            storage_url=seaweed.storage_url(bucket),
        )
        env = {
            **seaweed.env(),
            "TUNEVAULT_DATABASE_URL": str(settings.database_url),
            "TUNEVAULT_STORAGE_URL": str(settings.storage_url),
            "TUNEVAULT_JOB_POLL_SECONDS": "0.05",
        }
        # boto3 in this process (seeding, reading archives back) takes the standard chain.
        saved = {k: os.environ.get(k) for k in seaweed.env()}
        os.environ.update(seaweed.env())
        try:
            with open_services(settings) as svc:
                org, fts = seed_demo(svc)
                _, token = svc.store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
            yield Cluster(
                env=env,
                settings=settings,
                token=token,
                seaweed=seaweed,
                lora=next(ft for ft in fts if ft.is_lora),
                full=next(ft for ft in fts if not ft.is_lora),
            )
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def replica(c: Cluster, tmp_path: Path, name: str, **env: str) -> Any:
    return run_server(tmp_path / name, env={**c.env, **env})


def archive_of(c: Cluster, ft: FineTune, kind: Kind) -> bytes:
    with open_services(c.settings) as svc:
        ckpt = next(k for k in svc.store.list_checkpoints(ft.id) if k.final and k.kind == kind)
        archive = svc.store.get_archive(ckpt.id)
        assert archive is not None
        return b"".join(svc.storage.iter_range(archive.storage_key))


def auth(c: Cluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {c.token}"}


def test_redirect_mode_with_the_together_cli_and_sdk(cluster: Cluster, tmp_path: Path) -> None:
    expected = archive_of(cluster, cluster.lora, Kind.MERGED)
    with replica(cluster, tmp_path, "r1", TUNEVAULT_SERVE_MODE="redirect") as server:
        q = f"/v1/finetune/download?ft_id={cluster.lora.id}&checkpoint=merged"
        r = httpx.get(server.url + q, headers=auth(cluster))
        assert r.status_code == 307
        sha = hashlib.sha256(expected).hexdigest()
        assert r.headers["etag"] == f'"{sha}"' and r.headers["repr-digest"].startswith("sha-256")
        assert r.headers["x-archive-size"] == str(len(expected))
        # A HEAD asks about the archive: its GET's headers, no URL handed out.
        head = httpx.head(server.url + q, headers=auth(cluster))
        assert head.status_code == 200 and "location" not in head.headers
        assert head.headers["content-length"] == str(len(expected)) and head.content == b""
        assert head.headers["etag"] == r.headers["etag"]
        target = r.headers["location"]
        assert target.startswith(cluster.seaweed.endpoint_url) and "X-Amz-Signature" in target
        # The presigned URL honours Range by itself, without our key.
        part = httpx.get(target, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == expected[10:20]
        saved = together_download(server.url, cluster.token, tmp_path / "cli", cluster.lora.id)
        assert saved.read_bytes() == expected
        client = together.Together(api_key=cluster.token, base_url=server.url, max_retries=0)
        got = client.fine_tuning.content(ft_id=cluster.lora.id, checkpoint="merged").read()
        assert got == expected


def test_download_resumes_on_another_replica(cluster: Cluster, tmp_path: Path) -> None:
    expected = archive_of(cluster, cluster.full, Kind.MODEL_OUTPUT)
    q = f"/v1/finetune/download?ft_id={cluster.full.id}&checkpoint=model_output_path"
    with (
        replica(cluster, tmp_path, "a") as a,
        replica(cluster, tmp_path, "b", TUNEVAULT_SERVE_MODE="redirect") as b,
    ):
        cut = len(expected) // 3
        first = httpx.get(a.url + q, headers={**auth(cluster), "Range": f"bytes=0-{cut - 1}"})
        assert first.status_code == 206
        etag = first.headers["etag"]
        rest = httpx.get(
            b.url + q,
            follow_redirects=True,
            headers={**auth(cluster), "Range": f"bytes={cut}-", "If-Range": etag},
        )
        assert rest.status_code == 206
        assert first.content + rest.content == expected
        assert f'"{hashlib.sha256(expected).hexdigest()}"' == etag


def _publish(server: LiveServer, token: str, files: dict[str, bytes], ft_id: str) -> int:
    c = api_client(server.url, token)
    for data in files.values():
        upload(c, data)
    return commit(c, ft_id, files).status_code


def _worker(c: Cluster, tmp_path: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tunevault", "worker", "--data-dir", str(tmp_path / "w")],
        env={**os.environ, **c.env, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_two_replicas_and_workers_build_once_and_survive_a_killed_worker(
    cluster: Cluster, tmp_path: Path
) -> None:
    with open_services(cluster.settings) as svc:
        org = svc.store.get_org_by_name("demo")
        assert org is not None
        ft = svc.store.create_fine_tune(
            org.id, model="m", model_output_name="x/y", training_type="Full", status="running"
        )
    files = {"weights.bin": os.urandom(16 << 20), "config.json": b"{}"}
    no_workers = {"TUNEVAULT_BUILD_WORKERS": "0"}
    with (
        replica(cluster, tmp_path, "a", **no_workers) as a,
        replica(cluster, tmp_path, "b", **no_workers) as b,
    ):
        codes: list[int] = []
        threads = [
            threading.Thread(
                target=lambda s=s: codes.append(_publish(s, cluster.token, files, ft.id))
            )
            for s in (a, b)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes) in ([200, 201], [201, 201]), codes
        with open_services(cluster.settings) as svc:
            (ckpt,) = svc.store.list_checkpoints(ft.id)
            (job,) = svc.store.jobs_for_checkpoint(ckpt.id)
        assert job.state == "queued"
        slow = _worker(
            cluster, tmp_path, TUNEVAULT_ZSTD_LEVEL="19", TUNEVAULT_JOB_LEASE_SECONDS="2"
        )
        for _ in range(1200):
            with open_services(cluster.settings) as svc:
                if svc.store.jobs_for_checkpoint(ckpt.id)[0].state == "running":
                    break
            time.sleep(0.05)
        time.sleep(0.5)
        slow.send_signal(signal.SIGKILL)
        slow.wait()
        fast = _worker(cluster, tmp_path, TUNEVAULT_JOB_LEASE_SECONDS="2")
        q = f"/v1/finetune/download?ft_id={ft.id}&checkpoint=model_output_path"
        try:
            for _ in range(1200):
                r = httpx.get(b.url + q, headers=auth(cluster))
                if r.status_code == 200:
                    break
                time.sleep(0.05)
        finally:
            fast.terminate()
            fast.wait(30)
        assert r.status_code == 200
        assert httpx.get(a.url + q, headers=auth(cluster)).content == r.content
        with open_services(cluster.settings) as svc:
            (job,) = svc.store.jobs_for_checkpoint(ckpt.id)
        assert (job.state, job.attempts) == ("done", 2)


@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed")
def test_x_accel_behind_real_nginx(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir)
    with open_services(settings) as svc:
        org, fts = seed_demo(svc)
        _, token = svc.store.create_key(org.id, "rw", [Scope.READ])
        lora = next(ft for ft in fts if ft.is_lora)
        ckpt = next(k for k in svc.store.list_checkpoints(lora.id) if k.kind == Kind.MERGED)
        archive = svc.store.get_archive(ckpt.id)
        assert archive is not None
        expected = b"".join(svc.storage.iter_range(archive.storage_key))
    prefix = "/_tunevault_blobs/"
    with (
        run_server(data_dir, env={"TUNEVAULT_SERVE_MODE": "x-accel"}) as server,
        run_nginx(
            tmp_path / "nginx", x_accel_locations(server.url, data_dir / "blobs", prefix)
        ) as front,
    ):
        q = f"{front}/v1/finetune/download?ft_id={lora.id}&checkpoint=merged"
        h = {"Authorization": f"Bearer {token}"}
        # tunevault itself answers with an empty body and the internal path.
        direct = httpx.get(server.url + q.removeprefix(front), headers=h)
        assert direct.content == b"" and direct.headers["x-accel-redirect"].startswith(prefix)
        full = httpx.get(q, headers=h)
        assert full.status_code == 200 and full.content == expected
        etag = full.headers["etag"]
        assert etag == f'"{archive.sha256}"' and "repr-digest" in full.headers
        probe = httpx.get(q, headers={**h, "Range": "bytes=0-1"})
        assert probe.headers["content-range"] == f"bytes 0-1/{len(expected)}"
        part = httpx.get(q, headers={**h, "Range": "bytes=1000-", "If-Range": etag})
        assert part.status_code == 206 and part.content == expected[1000:]
        stale = httpx.get(q, headers={**h, "Range": "bytes=1000-", "If-Range": '"old"'})
        assert stale.status_code == 200 and stale.content == expected
        assert httpx.get(q, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{front}{prefix}{archive.storage_key}").status_code == 404
        saved = together_download(front, token, tmp_path / "cli", lora.id)
        assert saved.read_bytes() == expected
