"""kill -9 of the server at seeded points of a publish and of a download, and a full disk.

After each crash the server restarts on the same data dir: storage shows only complete,
digest-correct objects, no row points at a missing one, and the retried operation ends.
(A worker killed mid-build is tests/test_worker.py.)
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.helpers import (
    archive_members,
    check_consistent,
    download_query,
    make_key,
    publish,
    scratch_files,
    wait_archive,
    wait_for,
)
from tests.support.disk import fill
from tests.support.publishing import api_client as client
from tests.support.publishing import commit, create_fine_tune, sha, upload
from tests.support.server import LiveServer, run_server
from tunevault.service.context import open_services
from tunevault.service.gc import collect
from tunevault.settings import Settings

CHUNK = 256 << 10


def kill(server: LiveServer) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()


def resume_upload(c: httpx.Client, data: bytes) -> None:
    """Finish an interrupted upload from the offset HEAD reports."""
    url = f"/v1/publish/blobs/{sha(data)}"
    for _ in range(3):
        head = c.head(url)
        if head.status_code == 200:
            return
        offset = int(head.headers["Upload-Offset"])
        r = c.put(
            url,
            content=data[offset:],
            headers={"Upload-Length": str(len(data)), "Upload-Offset": str(offset)},
        )
        if r.status_code in (200, 201):
            return
    raise AssertionError("the upload never completed")


def test_kill_mid_upload_and_before_commit(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    token = make_key(settings)
    rng = random.Random(20261125)
    size = 12 << 20  # many of the server's 1 MiB write buffers (service/uploads.py BUFFER)
    # Kill points: seeded offsets into the body, the very end, and after a full upload.
    points = [rng.randrange(CHUNK, size) for _ in range(3)] + [size, None]
    published: dict[str, bytes] = {}
    for kill_at in points:
        data = rng.randbytes(size)  # new bytes each time: a stored blob is not re-read
        with run_server(settings.data_dir) as server, client(server.url, token) as c:
            ft_id = create_fine_tune(c)
            if kill_at is None:
                upload(c, data)
                kill(server)
            else:

                def body(
                    server: LiveServer = server, end: int = kill_at, data: bytes = data
                ) -> Iterator[bytes]:
                    sent = 0
                    while sent < end:
                        chunk = data[sent : min(sent + CHUNK, end)]
                        yield chunk
                        sent += len(chunk)
                    kill(server)  # the server has received at most `end` bytes

                with pytest.raises(httpx.TransportError):
                    c.put(
                        f"/v1/publish/blobs/{sha(data)}",
                        content=body(),
                        headers={"Upload-Length": str(size)},
                    )
        check_consistent(settings)
        with run_server(settings.data_dir) as server, client(server.url, token) as c:
            head = c.head(f"/v1/publish/blobs/{sha(data)}")
            if head.status_code == 404 and kill_at is not None:
                assert int(head.headers["Upload-Offset"]) <= kill_at
            resume_upload(c, data)
            assert commit(c, ft_id, {"w.bin": data}).status_code == 201
            r = c.post(f"/v1/publish/fine-tunes/{ft_id}/status", json={"status": "completed"})
            assert r.status_code == 200
            published[ft_id] = data
        check_consistent(settings)
    with run_server(settings.data_dir) as server, client(server.url, token) as c:
        for ft_id, data in published.items():
            assert archive_members(wait_archive(c, ft_id))["w.bin"] == data
    check_consistent(settings)
    # A build killed with its server leaves an invisible temp file: gc takes dead ones.
    with open_services(settings) as svc:
        collect(svc, grace_seconds=0, dry_run=False)
    assert scratch_files(settings) == []
    check_consistent(settings)


def test_kill_mid_download_then_resume(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    token = make_key(settings)
    rng = random.Random(7)
    data = rng.randbytes(24 << 20)
    with run_server(settings.data_dir) as server, client(server.url, token) as c:
        ft_id = publish(c, {"w.bin": data})
        full = wait_archive(c, ft_id)
    for kill_at in sorted(rng.randrange(CHUNK, len(full) - CHUNK) for _ in range(3)):
        got = b""
        with (
            run_server(settings.data_dir) as server,
            client(server.url, token) as c,
            pytest.raises(httpx.TransportError),
            c.stream("GET", download_query(ft_id)) as r,
        ):
            assert r.status_code == 200
            for chunk in r.iter_bytes(CHUNK):
                got += chunk
                if len(got) >= kill_at:
                    kill(server)
        assert full.startswith(got) and len(got) < len(full)
        check_consistent(settings)
        with run_server(settings.data_dir) as server, client(server.url, token) as c:
            r = c.get(download_query(ft_id), headers={"Range": f"bytes={len(got)}-"})
            assert r.status_code == 206
            assert got + r.content == full
    assert archive_members(full)["w.bin"] == data


# A full disk --------------------------------------------------------------------------


def test_full_disk_upload_answers_507_and_leaves_nothing(small_disk: Path) -> None:
    settings = Settings(data_dir=small_disk / "data")
    token = make_key(settings)
    small = os.urandom(1 << 20)
    with run_server(settings.data_dir) as server, client(server.url, token) as c:
        ft_id = publish(c, {"small.bin": small})
        archive = wait_archive(c, ft_id)
        big = os.urandom(96 << 20)
        url = f"/v1/publish/blobs/{sha(big)}"
        for offset in range(0, len(big), 8 << 20):  # one buffer per request: clean answers
            r = c.put(
                url,
                content=big[offset : offset + (8 << 20)],
                headers={"Upload-Length": str(len(big)), "Upload-Offset": str(offset)},
            )
            if r.status_code != 202:
                break
        assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage"
        assert c.head(url).headers["Upload-Offset"] == "0"
        assert scratch_files(settings) == []
        # A last buffer cut short by the full disk must not commit a truncated blob.
        fill(small_disk, 3 << 20)
        tail = os.urandom(5 << 20)
        r = c.put(
            f"/v1/publish/blobs/{sha(tail)}",
            content=tail,
            headers={"Upload-Length": str(len(tail))},
        )
        assert r.status_code == 507, r.text
        assert scratch_files(settings) == []
        r = c.get(download_query(ft_id))  # what it has, it still serves
        assert r.status_code == 200 and r.content == archive
    check_consistent(settings)


def test_full_disk_build_fails_the_job_once(small_disk: Path) -> None:
    settings = Settings(data_dir=small_disk / "data")
    token = make_key(settings)
    weights = os.urandom(20 << 20)  # random bytes: the archive is as large as the blob
    with run_server(settings.data_dir) as server, client(server.url, token) as c:
        small_ft = publish(c, {"small.bin": b"s" * 1000})
        small = wait_archive(c, small_ft)
        fill(small_disk, 30 << 20)  # room for the upload, not for its archive too
        ft_id = publish(c, {"w.bin": weights})

        def failed() -> bool:
            r = c.get(download_query(ft_id))
            return r.status_code != 409

        wait_for(failed, "the build to fail")
        r = c.get(download_query(ft_id))
        assert r.status_code == 507, r.text
        assert r.json()["error"]["code"] == "insufficient_storage"
        with open_services(settings) as svc:
            ckpt = svc.store.list_checkpoints(ft_id)[0]
            (job,) = svc.store.jobs_for_checkpoint(ckpt.id)
            assert (job.state, job.attempts, job.error_code) == (
                "failed",
                1,
                "insufficient_storage",
            )
            assert svc.store.get_archive(ckpt.id) is None
        assert scratch_files(settings) == []
        assert c.get(download_query(small_ft)).content == small
    inventory = check_consistent(settings)
    assert len(inventory.archives) == 1
