"""A merged checkpoint is derived too: evicting it frees its archive and merged files,
never the adapter or the base (uploads), and its next download merges it again to the
same sha256."""

from __future__ import annotations

from tests.cache.conftest import RESPOND_ASYNC, Store, sha
from tests.cache.test_eviction import _age_all
from tunevault.layout import blob_key
from tunevault.models import ArchiveFormat, JobKind, Kind, Scope
from tunevault.service.builds import build_archive
from tunevault.service.cache import enforce_budget
from tunevault.service.demo import seed_demo
from tunevault.service.usage import org_usage


def test_merged_files_go_with_the_archive_and_come_back(store: Store) -> None:
    org, fts = seed_demo(store.svc)
    lora = next(ft for ft in fts if ft.is_lora)
    merged = store.svc.store.find_checkpoint(lora.id, 20, Kind.MERGED)
    assert merged is not None and merged.files
    archive = store.svc.store.get_archive(merged.id)
    assert archive is not None
    uploads = {
        f.sha256
        for c in store.svc.store.list_checkpoints(lora.id)
        if c.kind != Kind.MERGED
        for f in store.svc.store.get_checkpoint(c.id).files  # type: ignore[union-attr]
    }
    base = store.svc.store.get_base_model(org.id, lora.model)
    assert base is not None
    uploads |= {f.sha256 for f in base.files}
    _age_all(store)
    gone = enforce_budget(store.with_settings(derived_budget_bytes=1))
    assert len(gone) == 5  # every archive: 2 adapters, 2 full outputs, the merged one
    assert sum(e.freed_bytes for e in gone) > sum(e.freed_bytes for e in gone if e.kind != "merged")
    derived = [f for f in merged.files if f.sha256 not in uploads]  # config etc. are the base's
    assert [f.path for f in derived] == ["model.safetensors"]
    assert store.svc.storage.stat(blob_key(derived[0].sha256)) is None
    assert all(store.svc.storage.stat(blob_key(s)) is not None for s in uploads)
    usage = org_usage(store.svc, org.id)
    assert (usage.archive_bytes, usage.merged_bytes) == (0, 0)
    assert usage.evicted_archives == 5 and usage.evicted_bytes > 0
    q = f"/v1/finetune/download?ft_id={lora.id}&checkpoint=merged"
    _, token = store.svc.store.create_key(org.id, "r", [Scope.READ])
    with store.client(**RESPOND_ASYNC, Authorization=f"Bearer {token}") as c:
        # File-level access (the Hub protocol) queues the merge too, and waits for it.
        hub = c.get(f"/api/models/{lora.id}/revision/merged")
        assert hub.status_code == 409 and hub.json()["error"]["code"] == "checkpoint_not_ready"
        assert hub.headers["Tunevault-Build-Reason"] == "evicted"
        assert c.get(q).status_code == 409
        assert store.build_all() == 1  # the merge, which packs the archive too
        r = c.get(q)
    assert r.status_code == 200 and sha(r.content) == archive.sha256
    again = store.svc.store.find_checkpoint(lora.id, 20, Kind.MERGED)
    assert again is not None and again.files == merged.files
    with store.client(Authorization=f"Bearer {token}") as c:
        assert c.get(f"/api/models/{lora.id}/revision/merged").status_code == 200


def test_a_merged_archive_built_with_sums_first_comes_back_as_it_was(store: Store) -> None:
    """Merged archives built before merges were packed in one pass carry SHA256SUMS first;
    evicted, one is rebuilt in that format, to the same bytes."""
    org, fts = seed_demo(store.svc)
    lora = next(ft for ft in fts if ft.is_lora)
    merged = store.svc.store.find_checkpoint(lora.id, 20, Kind.MERGED)
    assert merged is not None
    # What a server before the one-pass merge left: the merged files as blobs (stored on
    # request) packed with SHA256SUMS first, in place of today's archive.
    store.svc.store.queue_rebuild(merged.id, JobKind.MERGE_FILES)
    assert store.build_all() == 1
    old = build_archive(store.svc.store, store.svc.storage, merged.id)
    assert old.format == ArchiveFormat.SUMS_FIRST
    _age_all(store)
    gone = enforce_budget(store.with_settings(derived_budget_bytes=1))
    assert any(e.kind == "merged" and e.sha256 == old.sha256 for e in gone)
    q = f"/v1/finetune/download?ft_id={lora.id}&checkpoint=merged"
    _, token = store.svc.store.create_key(org.id, "r", [Scope.READ])
    with store.client(**RESPOND_ASYNC, Authorization=f"Bearer {token}") as c:
        assert c.get(q).status_code == 409
        assert store.build_all() == 1
        r = c.get(q)
    assert r.status_code == 200 and sha(r.content) == old.sha256
    again = store.svc.store.get_archive(merged.id)
    assert again is not None and again.format == ArchiveFormat.SUMS_FIRST
