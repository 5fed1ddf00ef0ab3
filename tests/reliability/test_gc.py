"""`tunevault gc`: what goes, what stays, and gc against a live server that publishes."""

from __future__ import annotations

import fcntl
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.reliability.helpers import (
    archive_members,
    check_consistent,
    make_key,
    publish,
    scratch_files,
    wait_archive,
)
from tests.support.publishing import api_client as client
from tests.support.publishing import sha
from tests.support.server import run_server
from tunevault.layout import blob_key
from tunevault.models import FileEntry, Kind
from tunevault.service.builds import archive_key_of, build_archive
from tunevault.service.context import Services, open_services
from tunevault.service.gc import collect
from tunevault.service.publishing import commit_checkpoint, put_file
from tunevault.settings import Settings


@pytest.fixture
def settings(settings_on_each_storage: Settings) -> Settings:
    return settings_on_each_storage


def _blob(svc: Services, tmp: Path, org_id: str, data: bytes, name: str = "f.bin") -> FileEntry:
    path = tmp / f"src-{sha(data)}"
    path.write_bytes(data)
    return put_file(svc.store, svc.storage, org_id, path, name)


def _keys(svc: Services, prefix: str) -> set[str]:
    return set(svc.storage.list(prefix))


def test_unreferenced_go_referenced_stay(settings: Settings, tmp_path: Path) -> None:
    with open_services(settings) as svc:
        org = svc.store.create_org("o")
        ft = svc.store.create_fine_tune(
            org.id, model="m", model_output_name="o/x", training_type="Full"
        )
        kept = [_blob(svc, tmp_path, org.id, os.urandom(4096), f"k{i}") for i in range(2)]
        gone = _blob(svc, tmp_path, org.id, b"nobody names me")
        ckpt, _ = commit_checkpoint(svc, ft, step=1, kind=Kind.MODEL_OUTPUT, final=True, files=kept)
        archive = build_archive(svc.store, svc.storage, ckpt.id)
        stray = archive_key_of((gone,), 9)  # an archive no row points to (a build that died)
        svc.storage.put(stray, b"x" * 100)
        orphan = os.urandom(1000)  # stored, never recorded (a server died in between)
        svc.storage.put(blob_key(sha(orphan)), orphan)

        dry = collect(svc, grace_seconds=0, dry_run=True)
        assert (dry.blobs_deleted, dry.archives_deleted, dry.blobs_registered) == (1, 1, 1)
        assert blob_key(gone.sha256) in _keys(svc, "blobs/")  # a dry run deletes nothing

        report = collect(svc, grace_seconds=0, dry_run=False)
        assert (report.blobs_deleted, report.blob_bytes) == (1, gone.size)
        assert (report.archives_deleted, report.archive_bytes) == (1, 100)
        assert report.blobs_registered == 1
        assert _keys(svc, "blobs/") == {blob_key(f.sha256) for f in kept} | {blob_key(sha(orphan))}
        assert _keys(svc, "archives/") == {archive.storage_key}
        assert svc.store.org_blob_sizes(org.id, [gone.sha256]) == {}

        # The orphan got a row dated now: a grace period protects it, then it goes.
        assert collect(svc, grace_seconds=3600, dry_run=False).blobs_deleted == 0
        assert collect(svc, grace_seconds=0, dry_run=False).blobs_deleted == 1
        assert _keys(svc, "blobs/") == {blob_key(f.sha256) for f in kept}
    check_consistent(settings)


def test_grace_protects_a_fresh_upload(settings: Settings, tmp_path: Path) -> None:
    with open_services(settings) as svc:
        org = svc.store.create_org("o")
        fresh = _blob(svc, tmp_path, org.id, b"just uploaded, not committed yet")
        report = collect(svc, grace_seconds=3600, dry_run=False)
        assert report.blobs_deleted == 0
        assert svc.store.org_blob_sizes(org.id, [fresh.sha256]) == {fresh.sha256: fresh.size}
        # Uploading it again restarts its grace period.
        time.sleep(0.2)
        _blob(svc, tmp_path, org.id, b"just uploaded, not committed yet")
        assert collect(svc, grace_seconds=0.1, dry_run=False).blobs_deleted == 0
        assert blob_key(fresh.sha256) in _keys(svc, "blobs/")


def _age(path: Path, seconds: float = 7200) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_stale_scratch_goes_live_scratch_stays(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with open_services(settings) as svc:
        uploads = settings.data_dir / "uploads" / "org-x"
        uploads.mkdir(parents=True)
        stale, live, fresh = (uploads / f"{c * 64}.part" for c in "abc")
        tmp = settings.data_dir / "blobs" / ".tmp" / "w-dead"
        merge = settings.data_dir / "tmp" / "merge-dead"
        (merge / "merged").mkdir(parents=True)
        (merge / "merged" / "model.safetensors").write_bytes(b"m" * 50)
        (merge / "base").symlink_to(settings.data_dir)  # merge inputs are links: not followed
        for p, size in ((stale, 10), (live, 20), (fresh, 30), (tmp, 40)):
            p.write_bytes(b"x" * size)
        for p in (stale, live, tmp, merge):
            _age(p)
        with live.open("ab") as held:  # an upload in progress: its server holds the lock
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            report = collect(svc, grace_seconds=3600, dry_run=False)
        assert (report.debris_deleted, report.debris_bytes) == (3, 10 + 40 + 50)
        assert not stale.exists() and not tmp.exists() and not merge.exists()
        assert live.exists() and fresh.exists()
        assert settings.data_dir.exists()


def test_deleting_a_fine_tune_frees_its_space(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    token = make_key(settings)
    shared, own = os.urandom(1 << 20), os.urandom(2 << 20)
    with run_server(settings.data_dir) as server, client(server.url, token) as c:
        doomed = publish(c, {"shared.bin": shared, "own.bin": own})
        survivor = publish(c, {"shared.bin": shared})
        wait_archive(c, doomed)
        expected = wait_archive(c, survivor)
        before = check_consistent(settings)
        assert c.delete(f"/v1/fine-tunes/{doomed}").status_code == 200
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "tunevault",
                "gc",
                "--data-dir",
                str(settings.data_dir),
                "--grace-hours",
                "0",
                "--json",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        assert '"blobs_deleted": 1' in out.stdout and '"archives_deleted": 1' in out.stdout
        after = check_consistent(settings)
        assert after.blobs == before.blobs - {sha(own)}
        assert sha(shared) in after.blobs
        assert len(after.archives) == len(before.archives) - 1
        r = c.get(f"/v1/finetune/download?ft_id={survivor}&checkpoint=model_output_path")
        assert r.status_code == 200 and r.content == expected


def test_gc_while_a_live_server_publishes_and_serves(tmp_path: Path, database_url: str) -> None:
    """gc with no grace in a loop, against a server publishing, building and serving; on
    SQLite (its write lock) and PostgreSQL (an advisory lock) as the gc lock."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    token = make_key(settings)
    stop, passes, rng = threading.Event(), [0], random.Random(7)
    errors: list[Exception] = []

    def gc_loop() -> None:
        with open_services(settings) as svc:
            for _ in range(400):
                if stop.is_set():
                    return
                try:
                    collect(svc, grace_seconds=0, dry_run=False)
                    passes[0] += 1
                    # With no grace every upload is fair game until its manifest commits:
                    # pause at random phases so publishes both lose races and get through.
                    stop.wait(rng.uniform(0, 0.15))
                except Exception as e:  # reported by the main thread
                    errors.append(e)
                    return

    published: dict[str, dict[str, bytes]] = {}
    shared = os.urandom(300_000)
    env = {"TUNEVAULT_DATABASE_URL": database_url}
    with run_server(settings.data_dir, env=env) as server, client(server.url, token) as c:
        gc = threading.Thread(target=gc_loop)
        gc.start()
        try:
            for i in range(8):
                files = {"shared.bin": shared, f"own{i}.bin": os.urandom(200_000 + i)}
                ft_id = publish(c, files, tries=50)
                published[ft_id] = files
                if i % 3 == 2:  # give gc something to free while it races the rest
                    doomed = next(iter(published))
                    assert c.delete(f"/v1/fine-tunes/{doomed}").status_code == 200
                    del published[doomed]
                for other, want in published.items():  # every committed manifest serves
                    got = archive_members(wait_archive(c, other))
                    assert {k: v for k, v in got.items() if k in want} == want
        finally:
            stop.set()
            gc.join()
        assert not errors, errors
        assert passes[0] > 0
    collect_once(settings)
    check_consistent(settings)
    assert scratch_files(settings) == []


def collect_once(settings: Settings) -> None:
    with open_services(settings) as svc:
        collect(svc, grace_seconds=0, dry_run=False)
