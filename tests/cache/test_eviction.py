"""Derived data as a cache, on local disk and SeaweedFS: over the budget the least
recently downloaded archive goes and downloads again bit for bit; many clients cause one
rebuild; a download in progress, a pinned step and uploads stay; a rebuild that differs
is never served."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.cache.conftest import RESPOND_ASYNC, Store, on_local_disk, sha
from tests.reliability.helpers import wait_for
from tests.support.server import run_server
from tunevault.layout import blob_key
from tunevault.metadata import tables as t
from tunevault.metadata.base import now
from tunevault.models import Archive, FineTune
from tunevault.service.cache import enforce_budget, set_pin


def _query(ft: FineTune) -> str:
    return f"/v1/finetune/download?ft_id={ft.id}&checkpoint=model_output_path"


def _age_all(store: Store) -> None:
    """Every archive built (and downloaded) two hours ago: past any grace."""
    old = now() - timedelta(hours=2)
    with store.svc.store.engine.begin() as conn:
        conn.execute(t.archives.update().values(created_at=old, last_download_at=None))


def _last_download(store: Store, archive: Archive) -> object:
    a = t.archives.c
    with store.svc.store.engine.connect() as conn:
        return conn.execute(
            sa.select(a.last_download_at).where(a.checkpoint_id == archive.checkpoint_id)
        ).scalar()


def _answers(store: Store, ft: FineTune) -> int:
    """The fine-tune's audited downloads: each batch dates the archives it names."""
    return sum(r.ft_id == ft.id for r in store.svc.store.list_downloads(ft.org_id, limit=1000))


def _download(store: Store, ft: FineTune, archive: Archive) -> None:
    """Download, then wait for the answer's audit row: the download's last touch of the
    archive comes with it (the first, at its start, may land earlier)."""
    before = _answers(store, ft)
    with store.client() as c:
        r = c.get(_query(ft))
    assert r.status_code == 200 and sha(r.content) == archive.sha256
    wait_for(lambda: _answers(store, ft) > before, "the download's audit row")


def test_lru_goes_and_downloads_again_bit_for_bit(store: Store, tmp_path: Path) -> None:
    fts = [store.fine_tune(f"ft{i}", tmp_path) for i in range(3)]
    _age_all(store)
    (a_ft, a), (b_ft, b), (c_ft, c) = fts
    _download(store, a_ft, a)
    _download(store, c_ft, c)  # b is the least recently downloaded
    svc = store.with_settings(derived_budget_bytes=a.size + c.size, derived_evict_grace_seconds=0)
    gone = enforce_budget(svc)
    assert [(e.ft_id, e.sha256) for e in gone] == [(b_ft.id, b.sha256)]
    assert store.svc.storage.stat(b.storage_key) is None
    assert store.svc.storage.stat(a.storage_key) is not None
    files = store.svc.store.get_checkpoint(b.checkpoint_id).files  # type: ignore[union-attr]
    assert all(store.svc.storage.stat(blob_key(f.sha256)) for f in files)  # uploads stay
    with store.client(**RESPOND_ASYNC) as client:
        r = client.get(_query(b_ft))
        assert r.status_code == 409 and r.json()["error"]["code"] == "archive_not_ready"
        assert r.headers["Tunevault-Build-Reason"] == "evicted"
        assert 1 <= int(r.headers["Retry-After"]) <= 10
        assert "evicted from the cache, rebuilding" in r.json()["error"]["message"]
        assert store.build_all() == 1
        r = client.get(_query(b_ft))
    assert r.status_code == 200 and sha(r.content) == b.sha256
    assert r.headers["ETag"] == f'"{b.sha256}"'


def test_many_clients_on_an_evicted_archive_cause_one_rebuild(store: Store, tmp_path: Path) -> None:
    ft, archive = store.fine_tune("one", tmp_path)
    _age_all(store)
    assert len(enforce_budget(store.with_settings(derived_budget_bytes=1))) == 1
    statuses: list[int] = []

    def ask() -> None:
        with store.client(**RESPOND_ASYNC) as c:
            statuses.append(c.get(_query(ft)).status_code)

    threads = [threading.Thread(target=ask) for _ in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert statuses == [409] * 12
    jobs = store.svc.store.jobs_for_checkpoint(archive.checkpoint_id)
    assert [j.state for j in jobs] == ["queued"]
    assert store.build_all() == 1  # one job, one build
    with store.client() as c:
        assert sha(c.get(_query(ft)).content) == archive.sha256


def test_a_download_in_progress_keeps_its_archive(store: Store, tmp_path: Path) -> None:
    ft, archive = store.fine_tune("big", tmp_path, size=48 << 20)
    other_ft, other = store.fine_tune("small", tmp_path)
    _age_all(store)
    # No grace at all on local disk: the reader's lock alone protects the archive. On S3
    # the rule is the grace after a download's start, which the audit writer dates.
    grace = 0 if on_local_disk(store) else 600
    svc = store.with_settings(derived_budget_bytes=1, derived_evict_grace_seconds=grace)
    with store.client() as c, c.stream("GET", _query(ft)) as r:
        body = r.iter_bytes(1 << 16)
        first = next(body)
        if grace:
            wait_for(lambda: _last_download(store, archive) is not None, "the start's touch")
        assert [e.ft_id for e in enforce_budget(svc)] == [other_ft.id]
        assert store.svc.storage.stat(archive.storage_key) is not None
        rest = b"".join(body)
    assert sha(first + rest) == archive.sha256
    assert store.svc.storage.stat(other.storage_key) is None


def test_pinned_stays_and_pinning_an_evicted_step_rebuilds_it(store: Store, tmp_path: Path) -> None:
    (kept, kept_archive), (evicted, evicted_archive) = (
        store.fine_tune("kept", tmp_path),
        store.fine_tune("evicted", tmp_path),
    )
    _age_all(store)
    assert set_pin(store.svc, kept.id, None, True).step == 1
    assert [e.ft_id for e in enforce_budget(store.with_settings(derived_budget_bytes=1))] == [
        evicted.id
    ]
    assert store.svc.storage.stat(kept_archive.storage_key) is not None
    pin = set_pin(store.svc, evicted.id, 1, True)
    assert pin.rebuilding == 1 and store.build_all() == 1
    rebuilt = store.svc.store.get_archive(evicted_archive.checkpoint_id)
    assert rebuilt is not None and rebuilt.sha256 == evicted_archive.sha256
    assert store.svc.storage.stat(rebuilt.storage_key) is not None
    assert not enforce_budget(store.with_settings(derived_budget_bytes=1))  # both pinned


def test_a_rebuild_that_differs_is_never_served(store: Store, tmp_path: Path) -> None:
    ft, archive = store.fine_tune("drift", tmp_path)
    _age_all(store)
    enforce_budget(store.with_settings(derived_budget_bytes=1))
    e = t.evicted_archives.c
    with store.svc.store.engine.begin() as conn:  # as if its inputs had changed since
        conn.execute(t.evicted_archives.update().values(sha256="0" * 64))
    with store.client(**RESPOND_ASYNC) as c:
        assert c.get(_query(ft)).status_code == 409
        assert store.build_all() == 1
        r = c.get(_query(ft))
    assert r.status_code == 500 and r.json()["error"]["code"] == "rebuild_mismatch"
    assert "0" * 64 in r.json()["error"]["message"]
    assert store.svc.store.get_archive(archive.checkpoint_id) is None
    assert store.svc.storage.stat(archive.storage_key) is None  # nothing stored
    with store.svc.store.engine.connect() as conn:
        assert conn.execute(sa.select(e.sha256)).scalar() == "0" * 64


def test_an_archive_kept_in_memory_is_not_answered_once_evicted(
    store: Store, tmp_path: Path
) -> None:
    ft, archive = store.fine_tune("in-memory", tmp_path)  # small: kept in server memory
    env = {**store.env, "TUNEVAULT_RESOLVE_CACHE_SECONDS": "600"}  # the resolve holds too
    with run_server(store.server.data_dir / "memory", env=env) as server:
        auth = {"Authorization": f"Bearer {store.token}", **RESPOND_ASYNC}
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as c:
            for _ in range(2):  # the second answered from memory
                r = c.get(_query(ft))
                assert r.status_code == 200 and sha(r.content) == archive.sha256
            # Both answers' audit rows, so both downloads' touches are in (a later touch
            # would make the archive recently used again, after it was aged).
            wait_for(lambda: _answers(store, ft) == 2, "both downloads' audit rows")
            _age_all(store)
            evict = store.with_settings(derived_budget_bytes=1, derived_evict_grace_seconds=0)
            assert [e.ft_id for e in enforce_budget(evict)] == [ft.id]
            r = c.get(_query(ft))
    assert r.status_code == 409 and r.headers["Tunevault-Build-Reason"] == "evicted"
