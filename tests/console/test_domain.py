"""The console's domain functions (sessions, share links, pages' reads) on SQLite and a real
PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tunevault.errors import ArchiveNotReady, CheckpointNotFound, ShareLinkGone, ShareLinkNotFound
from tunevault.metadata import MetadataStore
from tunevault.metadata import tables as t
from tunevault.metadata.base import now
from tunevault.models import FileEntry, FineTune, Kind, MetricRow, Scope
from tunevault.service import console, sessions, shares

SECRET = b"k" * 32
FILE = FileEntry("model.safetensors", 1234, "ab" * 32)


@pytest.fixture
def store(database_url: str) -> MetadataStore:
    s = MetadataStore(database_url)
    s.migrate()
    return s


def _org(store: MetadataStore, name: str) -> tuple[str, FineTune]:
    org = store.create_org(name)
    _, token = store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
    ft = store.create_fine_tune(
        org.id, model="base", model_output_name=f"{name}/out", training_type="Full"
    )
    return token, ft


def test_sessions_live_until_sign_out_expiry_or_revocation(store: MetadataStore) -> None:
    token, _ = _org(store, "acme")
    assert sessions.sign_in(store, "tv_bogus", 12) is None
    made = sessions.sign_in(store, token, 12)
    assert made is not None
    session_id, session = made
    found = sessions.lookup(store, session_id)
    assert found is not None and found.principal.org_name == "acme"
    assert found.csrf_token == session.csrf_token
    sessions.sign_out(store, session_id)
    assert sessions.lookup(store, session_id) is None

    expiring = sessions.sign_in(store, token, 12)
    assert expiring is not None
    with store.engine.begin() as conn:  # twelve hours later
        conn.execute(t.console_sessions.update().values(expires_at=now() - timedelta(seconds=1)))
    assert sessions.lookup(store, expiring[0]) is None

    live = sessions.sign_in(store, token, 12)
    assert live is not None
    store.revoke_key(live[1].principal.key_id)  # revoked elsewhere: the CLI, say
    assert sessions.lookup(store, live[0]) is None


def test_share_links_are_signed_scoped_and_mortal(store: MetadataStore) -> None:
    token, ft = _org(store, "acme")
    who = store.authenticate(token)
    assert who is not None
    ckpt = store.add_checkpoint(ft.id, 10, Kind.MODEL_OUTPUT, True, [FILE])
    with pytest.raises(ArchiveNotReady):
        shares.create(store, SECRET, who, ckpt.id, 3600)
    store.set_archive(ckpt.id, "archives/x.tar.zst", "cd" * 32, 999)
    link, text = shares.create(store, SECRET, who, ckpt.id, 3600)
    opened, _, opened_ckpt, archive = shares.open_link(store, SECRET, text)
    assert (opened.id, opened_ckpt.id, archive.size) == (link.id, ckpt.id, 999)
    with pytest.raises(ShareLinkNotFound):
        shares.open_link(store, b"another secret" * 3, text)
    with pytest.raises(ShareLinkNotFound):
        shares.open_link(store, SECRET, text[:-1] + ("A" if text[-1] != "A" else "B"))

    other_token, _ = _org(store, "other")
    other = store.authenticate(other_token)
    assert other is not None
    with pytest.raises(CheckpointNotFound):
        shares.create(store, SECRET, other, ckpt.id, 3600)
    assert shares.revoke(store, other, link.id) is None
    assert shares.list_links(store, other.org_id) == []

    revoked = shares.revoke(store, who, link.id)
    assert revoked is not None and revoked.revoked_by == who.key_id
    with pytest.raises(ShareLinkGone, match="revoked"):
        shares.open_link(store, SECRET, text)


def test_an_expired_link_is_gone(store: MetadataStore) -> None:
    token, ft = _org(store, "acme")
    who = store.authenticate(token)
    assert who is not None
    ckpt = store.add_checkpoint(ft.id, 1, Kind.MODEL_OUTPUT, True, [FILE])
    store.set_archive(ckpt.id, "archives/y.tar.zst", "ef" * 32, 5)
    link, _ = shares.create(store, SECRET, who, ckpt.id, 60)
    past = now().replace(microsecond=0) - timedelta(days=1)
    with store.engine.begin() as conn:
        conn.execute(
            t.share_links.update().where(t.share_links.c.id == link.id).values(expires_at=past)
        )
    (old,) = shares.list_links(store, who.org_id)
    with pytest.raises(ShareLinkGone, match="expired"):
        shares.open_link(store, SECRET, shares.token(SECRET, old))


def test_page_reads_are_scoped_to_the_organization(store: MetadataStore) -> None:
    token, ft = _org(store, "acme")
    _, theirs = _org(store, "other")
    who = store.authenticate(token)
    assert who is not None
    store.add_checkpoint(ft.id, 5, Kind.MODEL_OUTPUT, True, [FILE])
    store.add_metrics(ft.id, [MetricRow(1, {"train/loss": 1.0})])
    view = console.fine_tune_view(store, who.org_id, ft.id)
    assert view is not None and view.checkpoints[0][0].files == (FILE,)
    assert len(view.metrics) == 1
    assert console.fine_tune_view(store, who.org_id, theirs.id) is None
    page = console.list_fine_tunes(store, who.org_id, text="ACME/")
    assert [f.id for f in page.items] == [ft.id] and page.pages == 1
    assert console.storage_usage(store, who.org_id).archives == 0
    assert not console.revoke_key(store, theirs.org_id, who.key_id)  # not their key
    assert store.authenticate(token) is not None


def test_the_list_pages_newest_first(store: MetadataStore) -> None:
    _, first = _org(store, "acme")
    org_id = first.org_id
    for i in range(console.PAGE_SIZE + 4):
        store.create_fine_tune(
            org_id, model="base", model_output_name=f"acme/run-{i}", training_type="Lora"
        )
    one = console.list_fine_tunes(store, org_id)
    two = console.list_fine_tunes(store, org_id, page=2)
    assert (one.total, one.pages, len(one.items), len(two.items)) == (30, 2, 25, 5)
    assert first.id == two.items[-1].id  # the oldest comes last
    assert console.list_fine_tunes(store, org_id, page=99).page == 2
    assert console.list_fine_tunes(store, org_id, training_type="Full").items == [first]
