"""The resolution cache through the real server: what it keeps, what ends it (deletion,
revocation, a blob evicted and rebuilt elsewhere), and one audit row per download."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.seeding import seed_fine_tune
from tests.support.server import run_server
from tunevault.models import FineTune
from tunevault.service.context import open_services
from tunevault.settings import Settings

Q = "/v1/finetune/download?checkpoint=model_output_path&ft_id="


@contextmanager
def seeded(tmp_path: Path, cache_seconds: str) -> Iterator[tuple[str, str, FineTune, Settings]]:
    src = tmp_path / "src"
    src.mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(3 << 20))
    settings = Settings(data_dir=tmp_path / "data")
    token, ft, _ = seed_fine_tune(settings, src)
    env = {"TUNEVAULT_RESOLVE_CACHE_SECONDS": cache_seconds}
    with run_server(settings.data_dir, env=env) as server:
        yield server.url, token, ft, settings


def fetch(url: str, token: str, ft: FineTune) -> httpx.Response:
    return httpx.get(url + Q + ft.id, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def eventually(status: int, url: str, token: str, ft: FineTune) -> None:
    """Poll until the server answers `status` (what a short cache promises: soon)."""
    deadline = time.monotonic() + 30
    while (got := fetch(url, token, ft).status_code) != status:
        assert time.monotonic() < deadline, f"still {got}, not {status}"
        time.sleep(0.05)


def test_a_deletion_and_a_revocation_take_effect(tmp_path: Path) -> None:
    with seeded(tmp_path, "1") as (url, token, ft, settings):
        assert fetch(url, token, ft).status_code == 200
        with open_services(settings) as svc:
            svc.store.delete_fine_tune(ft.org_id, ft.id)
        eventually(404, url, token, ft)
        with open_services(settings) as svc:
            (key,) = svc.store.list_keys(ft.org_id)
            svc.store.revoke_key(key.id)
        eventually(401, url, token, ft)


def test_the_cache_holds_for_its_time_and_no_longer_without_it(tmp_path: Path) -> None:
    with seeded(tmp_path, "3600") as (url, token, ft, settings):
        assert fetch(url, token, ft).status_code == 200
        with open_services(settings) as svc:
            svc.store.delete_fine_tune(ft.org_id, ft.id)
        assert fetch(url, token, ft).status_code == 200  # resolved an hour ago, by its setting
    with seeded(tmp_path / "off", "0") as (url, token, ft, settings):
        assert fetch(url, token, ft).status_code == 200
        with open_services(settings) as svc:
            svc.store.delete_fine_tune(ft.org_id, ft.id)
        assert fetch(url, token, ft).status_code == 404


def test_an_evicted_blob_is_resolved_again_and_audited_once(tmp_path: Path) -> None:
    with seeded(tmp_path, "3600") as (url, token, ft, settings):
        first = fetch(url, token, ft)
        assert first.status_code == 200
        with open_services(settings) as svc:  # evicted, then rebuilt under another key
            ((ckpt, archive),) = svc.store.fine_tune_with_archives(ft.org_id, ft.id)[1]
            assert archive is not None
            data = b"".join(svc.storage.iter_range(archive.storage_key))
            svc.storage.put("archives/rebuilt.tar.zst", data)
            svc.storage.delete(archive.storage_key)
            svc.store.record_archive(
                ckpt.id, "archives/rebuilt.tar.zst", archive.sha256, len(data), lambda: True
            )
        again = fetch(url, token, ft)
        assert again.status_code == 200, again.text
        assert hashlib.sha256(again.content).hexdigest() == archive.sha256
    with open_services(settings) as svc:  # the server has stopped: its audit is drained
        rows = svc.store.list_downloads(ft.org_id)
    assert sorted(r.status for r in rows) == [200, 200]
