"""The metadata store, run against SQLite and a real PostgreSQL cluster alike."""

from __future__ import annotations

import sqlalchemy as sa

from tunevault.metadata import MetadataStore
from tunevault.metadata import tables as t
from tunevault.models import FileEntry, Kind, MetricRow, NewEvent, Scope


def _store(url: str) -> MetadataStore:
    store = MetadataStore(url)
    store.migrate()
    return store


def test_migrate_is_idempotent_and_reaches_head(database_url: str) -> None:
    store = _store(database_url)
    store.migrate()
    with store.engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert version == "0014"
    store.close()


def test_keys_are_hashed_scoped_and_revocable(database_url: str) -> None:
    store = _store(database_url)
    org = store.create_org("acme")
    key, token = store.create_key(org.id, "ci", [Scope.READ, Scope.PUBLISH])
    who = store.authenticate(token)
    assert who is not None and who.org_id == org.id and who.org_name == "acme"
    assert who.scopes == {Scope.READ, Scope.PUBLISH}
    with store.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT secret_sha256 FROM api_keys")).scalar()
    assert stored is not None and token.split("_", 2)[2] not in stored  # never the secret
    # A wrong secret for a real key id, garbage, and an empty token are all refused.
    assert store.authenticate(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    assert store.authenticate("tv_0000000000000000_" + "x" * 43) is None
    assert store.authenticate("not-a-key") is None
    assert store.revoke_key(key.id) is True
    assert store.authenticate(token) is None
    assert store.revoke_key(key.id) is False
    assert [k.id for k in store.list_keys(org.id)] == [key.id]
    store.close()


def test_fine_tunes_are_isolated_per_organization(database_url: str) -> None:
    store = _store(database_url)
    a, b = store.create_org("a"), store.create_org("b")
    ft = store.create_fine_tune(
        a.id,
        model="base",
        model_output_name="a/out",
        training_type="Lora",
        lora_r=8,
        lora_alpha=16,
    )
    assert ft.id.startswith("ft-") and len(ft.id) == 39
    assert store.get_fine_tune(a.id, ft.id) == ft
    assert store.get_fine_tune(b.id, ft.id) is None
    assert store.list_fine_tunes(b.id) == []
    assert store.set_status(b.id, ft.id, "cancelled") is None
    assert store.delete_fine_tune(b.id, ft.id) is False
    got = store.get_fine_tune(a.id, ft.id)
    assert got is not None and got.status == "pending"
    store.close()


def test_checkpoints_archives_events_metrics_and_delete(database_url: str) -> None:
    store = _store(database_url)
    org = store.create_org("acme")
    ft = store.create_fine_tune(org.id, model="m", model_output_name="o", training_type="Full")
    files = [FileEntry("b.bin", 3, "b" * 64), FileEntry("a.json", 2, "a" * 64)]
    ckpt = store.add_checkpoint(ft.id, 10, Kind.MODEL_OUTPUT, False, files, jobs=["archive"])
    assert [f.path for f in ckpt.files] == ["a.json", "b.bin"]
    again = store.get_checkpoint(ckpt.id)
    assert again is not None and again.files == ckpt.files and again.kind == Kind.MODEL_OUTPUT
    assert store.get_archive(ckpt.id) is None
    archive = store.record_archive(ckpt.id, "archives/x.tar.zst", "c" * 64, 123, lambda: True)
    assert store.get_archive(ckpt.id) == archive
    store.add_event(ft.id, "checkpoint_save", "saved", step=10)
    assert [e.type for e in store.list_events(ft.id)] == ["CHECKPOINT_SAVE"]
    store.add_metrics(ft.id, [MetricRow(2, {"loss": 1.5}), MetricRow(1, {"loss": 2.0})])
    assert [(m.step, m.values["loss"]) for m in store.list_metrics(ft.id)] == [(1, 2.0), (2, 1.5)]
    assert store.delete_fine_tune(org.id, ft.id) is True
    assert store.get_checkpoint(ckpt.id) is None
    assert store.get_archive(ckpt.id) is None
    assert store.list_events(ft.id) == [] and store.list_metrics(ft.id) == []
    assert store.jobs_for_checkpoint(ckpt.id) == []
    assert _count(store, t.checkpoint_files) == 0
    assert store.delete_fine_tune(org.id, ft.id) is False
    store.close()


def _count(store: MetadataStore, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_forgetting_a_checkpoint_or_base_model_drops_its_rows(database_url: str) -> None:
    store = _store(database_url)
    org = store.create_org("acme")
    ft = store.create_fine_tune(org.id, model="m", model_output_name="o", training_type="Full")
    ckpt = store.add_checkpoint(
        ft.id, 1, Kind.MODEL_OUTPUT, True, [FileEntry("w", 1, "a" * 64)], jobs=["archive"]
    )
    store.record_archive(ckpt.id, "archives/x.tar.zst", "c" * 64, 1, lambda: True)
    base = store.create_base_model(org.id, "base", [FileEntry("b", 1, "b" * 64)])
    store.forget_checkpoint(ckpt.id)
    store.forget_base_model(base.id)
    assert store.get_checkpoint(ckpt.id) is None and store.get_base_model(org.id, "base") is None
    for table in (t.checkpoint_files, t.archives, t.build_jobs, t.base_model_files):
        assert _count(store, table) == 0, table.name
    assert store.get_fine_tune(org.id, ft.id) is not None
    store.close()


def test_the_download_lookup_reads_the_status_as_get_fine_tune_does(database_url: str) -> None:
    store = _store(database_url)
    org = store.create_org("acme")
    ft = store.create_fine_tune(
        org.id, model="m", model_output_name="o", training_type="Full", status="completed"
    )
    ckpt = store.add_checkpoint(ft.id, 1, Kind.MODEL_OUTPUT, True, [], jobs=["archive"])
    found, rows = store.fine_tune_with_archives(org.id, ft.id)
    assert found is not None and found.status == "compressing"  # the build is pending
    assert found == store.get_fine_tune(org.id, ft.id)
    assert [(c.id, a) for c, a in rows] == [(ckpt.id, None)]
    assert store.fine_tune_with_archives("other", ft.id) == (None, [])
    store.close()


def test_rows_with_ids_are_appended_once(database_url: str) -> None:
    store = _store(database_url)
    org = store.create_org("acme")
    ft = store.create_fine_tune(org.id, model="m", model_output_name="o", training_type="Full")
    other = store.create_fine_tune(org.id, model="m", model_output_name="p", training_type="Full")
    batch = [
        NewEvent("a", "1", client_id="e1"),
        NewEvent("b", "2"),
        NewEvent("c", "3", client_id="e1"),
    ]
    assert store.add_events(ft.id, batch) == 2  # the id repeated in the batch is skipped
    assert store.add_events(ft.id, batch) == 1  # a retry: only the row without an id again
    assert [e.type for e in store.list_events(ft.id)] == ["A", "B", "B"]
    assert store.add_events(other.id, batch) == 2  # ids are per fine-tune
    rows = [MetricRow(1, {"loss": 2.0}, "log:0"), MetricRow(2, {"loss": 1.5}, "log:1")]
    assert store.add_metrics(ft.id, rows) == 2
    assert store.add_metrics(ft.id, [*rows, MetricRow(3, {"loss": 1.0}, "log:2")]) == 1
    assert [m.step for m in store.list_metrics(ft.id)] == [1, 2, 3]
    store.close()


def test_base_models_are_listed_by_name_with_their_files(database_url: str) -> None:
    store = _store(database_url)
    acme, other = store.create_org("acme"), store.create_org("other")
    b_files = [FileEntry("w.bin", 3, "b" * 64), FileEntry("config.json", 2, "c" * 64)]
    store.create_base_model(acme.id, "zeta", [FileEntry("z.bin", 1, "d" * 64)])
    store.create_base_model(acme.id, "alpha", b_files)
    store.create_base_model(other.id, "beta", [FileEntry("x", 1, "e" * 64)])
    listed = store.list_base_models(acme.id)
    assert [m.name for m in listed] == ["alpha", "zeta"]
    assert listed[0] == store.get_base_model(acme.id, "alpha")
    assert [f.path for f in listed[0].files] == ["config.json", "w.bin"]
    store.close()
