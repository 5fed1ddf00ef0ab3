"""The cache's bookkeeping on SQLite and PostgreSQL (the LRU order from the audit
writer's batches, eviction, one rebuild per checkpoint, pins), eviction after a build
that passes the budget, and the operator's surfaces: `tunevault pin`/`unpin`, the admin
route, `tunevault gc` and `tunevault usage`, and `tunevault download` waiting visibly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from tests.cache.conftest import Store, sha
from tests.cache.test_eviction import _age_all
from tests.support.seeding import publish_and_build
from tests.support.server import run_server
from tunevault.metadata.base import now
from tunevault.models import DownloadRecord, FineTune, JobKind, Scope
from tunevault.service.cache import enforce_budget, set_pin
from tunevault.service.context import Services, open_services
from tunevault.settings import Settings


def _ft(svc: Services, org_id: str, name: str, src: Path) -> FineTune:
    ft = svc.store.create_fine_tune(
        org_id, model="m", model_output_name=name, training_type="Full", status="completed"
    )
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(10_000))
    return ft


def _record(ft: FineTune, archive_sha256: str) -> DownloadRecord:
    return DownloadRecord(
        created_at=now(),
        org_id="o",
        key_id="k",
        ft_id=ft.id,
        step=1,
        kind="model_output_path",
        archive_sha256=archive_sha256,
        range_start=0,
        bytes_planned=1,
        bytes_sent=1,
        status=200,
        mode="proxy",
        client=None,
        user_agent=None,
    )


def test_bookkeeping_on_each_database(database_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        fts = [_ft(svc, org.id, f"acme/{i}", tmp_path / f"src{i}") for i in range(3)]
        archives = [publish_and_build(svc, ft, tmp_path / f"src{i}") for i, ft in enumerate(fts)]
        assert svc.store.derived_total() == sum(a.size for a in archives)
        later = now() + timedelta(hours=1)
        order = [c.checkpoint_id for c in svc.store.eviction_candidates(later)]
        assert order == [a.checkpoint_id for a in archives]  # never downloaded: build order
        # A download's start (by digest) and a finished download both move it last.
        svc.store.record_downloads([], began={archives[0].sha256})
        svc.store.record_downloads([_record(fts[1], archives[1].sha256)])
        order = [c.checkpoint_id for c in svc.store.eviction_candidates(later)]
        assert order == [
            archives[2].checkpoint_id,
            archives[0].checkpoint_id,
            archives[1].checkpoint_id,
        ]
        assert not svc.store.eviction_candidates(now() - timedelta(hours=1))  # all recent
        budget = Services(
            settings.model_copy(
                update={"derived_budget_bytes": archives[0].size, "derived_evict_grace_seconds": 0}
            ),
            svc.store,
            svc.storage,
        )
        set_pin(svc, fts[0].id, 1, True)
        evicted = enforce_budget(budget)
        assert {e.ft_id for e in evicted} == {fts[1].id, fts[2].id}
        assert svc.store.evicted_by_org(org.id) == {
            org.id: (2, archives[1].size + archives[2].size)
        }
        for _ in range(3):  # one job however often asked
            svc.store.queue_rebuild(archives[2].checkpoint_id, JobKind.ARCHIVE)
        jobs = svc.store.jobs_for_checkpoint(archives[2].checkpoint_id)
        assert [j.state for j in jobs] == ["queued"]
        assert not enforce_budget(budget)  # over, but the rest is pinned or being built
        gone = svc.store.evicted_archive(archives[1].checkpoint_id)
        assert gone is not None and gone.sha256 == archives[1].sha256


def test_a_build_that_passes_the_budget_evicts(store: Store, tmp_path: Path) -> None:
    _, first = store.fine_tune("first", tmp_path)
    _age_all(store)
    budgeted = store.with_settings(derived_budget_bytes=first.size + 1)
    ft = store.svc.store.create_fine_tune(
        store.org_id, model="m", model_output_name="cache/second", training_type="Full",
        status="completed",
    )  # fmt: skip
    src = tmp_path / "second"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(64 << 10))
    second = publish_and_build(budgeted, ft, src)  # its worker evicts after the build
    assert store.svc.store.get_archive(first.checkpoint_id) is None
    assert store.svc.storage.stat(first.storage_key) is None
    assert store.svc.storage.stat(second.storage_key) is not None
    gone = store.svc.store.evicted_archive(first.checkpoint_id)
    assert gone is not None and (gone.sha256, gone.format) == (first.sha256, first.format)


def _tv(store: Store, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEVAULT_")}
    return subprocess.run(
        [sys.executable, "-m", "tunevault", *args],
        env={**env, **store.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pin_commands_route_gc_and_usage(store: Store, tmp_path: Path) -> None:
    ft, _ = store.fine_tune("pinned", tmp_path)
    other_ft, other = store.fine_tune("other", tmp_path)
    _age_all(store)
    data = ["--data-dir", str(store.svc.settings.data_dir)]
    done = _tv(store, "pin", f"{ft.id}:1", *data, "--json")
    assert json.loads(done.stdout) == {"ft_id": ft.id, "step": 1, "pinned": True, "rebuilding": 0}
    assert f"pinning {ft.id}:1" in done.stderr
    missing = _tv(store, "pin", f"{ft.id}:7", *data)
    assert missing.returncode == 4 and "no checkpoint at step 7; steps: 1" in missing.stderr
    env = {**store.env, "TUNEVAULT_DERIVED_BUDGET_BYTES": "1"}
    env["TUNEVAULT_DERIVED_EVICT_GRACE_SECONDS"] = "0"
    gc = subprocess.run(
        [sys.executable, "-m", "tunevault", "gc", *data, "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert [e["ft_id"] for e in json.loads(gc.stdout)["archives_evicted"]] == [other_ft.id]
    usage = json.loads(_tv(store, "usage", *data, "--json").stdout)["data"][0]
    assert (usage["evicted_archives"], usage["evicted_bytes"]) == (1, other.size)
    assert "evicted 1 archives" in _tv(store, "usage", *data).stdout
    # The organization's admin pins over HTTP; another organization's fine-tune is a 404.
    _, admin = store.svc.store.create_key(store.org_id, "admin", [Scope.ADMIN])
    stranger = store.svc.store.create_org("stranger")
    _, theirs = store.svc.store.create_key(stranger.id, "admin", [Scope.ADMIN])
    with store.client(Authorization=f"Bearer {admin}") as c:
        r = c.put(f"/v1/admin/pins/{other_ft.id}")
        assert r.json() == {"ft_id": other_ft.id, "step": 1, "pinned": True, "rebuilding": 1}
        assert c.delete(f"/v1/admin/pins/{ft.id}?step=1").json()["pinned"] is False
        assert c.put(f"/v1/admin/pins/{ft.id}?step=x").status_code == 400
    with store.client(Authorization=f"Bearer {theirs}") as c:
        r = c.put(f"/v1/admin/pins/{ft.id}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "fine_tune_not_found"
    assert _tv(store, "unpin", other_ft.id, *data).returncode == 0
    assert store.svc.store.pinned_steps(other_ft.id) == []


def test_tunevault_download_waits_visibly_for_a_rebuild(store: Store, tmp_path: Path) -> None:
    ft, archive = store.fine_tune("wait", tmp_path)
    _age_all(store)
    assert enforce_budget(store.with_settings(derived_budget_bytes=1))
    env = {**store.env, "TUNEVAULT_BUILD_WORKERS": "1"}
    with run_server(store.server.data_dir / "workers", env=env) as server:
        client_env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEVAULT_")}
        out = tmp_path / "got.tar.zst"
        r = subprocess.run(
            [sys.executable, "-m", "tunevault", "download", ft.id, "-o", str(out)],
            env={**client_env, "TUNEVAULT_URL": server.url, "TUNEVAULT_API_KEY": store.token},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 0, r.stderr
    assert "evicted from the cache, rebuilding" in r.stderr
    assert sha(out.read_bytes()) == archive.sha256
