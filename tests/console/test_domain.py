"""The console's domain functions (sessions, share links, pages' reads) on SQLite and a real
PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tunevault.errors import ArchiveNotReady, CheckpointNotFound, ShareLinkGone, ShareLinkNotFound
from tunevault.metadata import tables as t
from tunevault.metadata.base import now
from tunevault.models import FileEntry, FineTune, KeyLimitOverrides, Kind, MetricRow, Scope
from tunevault.service import console, sessions, shares
from tunevault.service.context import Services, open_services
from tunevault.settings import Settings

SECRET = b"k" * 32
FILE = FileEntry("model.safetensors", 1234, "ab" * 32)


@pytest.fixture
def svc(database_url: str, tmp_path: Path) -> Iterator[Services]:
    with open_services(Settings(data_dir=tmp_path, database_url=database_url)) as s:
        yield s


def _org(svc: Services, name: str) -> tuple[str, FineTune]:
    org = svc.store.create_org(name)
    limits = KeyLimitOverrides(requests_per_minute=600, max_downloads=3)
    _, token = svc.store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH], limits)
    ft = svc.store.create_fine_tune(
        org.id, model="base", model_output_name=f"{name}/out", training_type="Full"
    )
    return token, ft


def test_sessions_live_until_sign_out_expiry_or_revocation(svc: Services) -> None:
    token, _ = _org(svc, "acme")
    assert sessions.sign_in(svc, "tv_bogus", 12) is None
    made = sessions.sign_in(svc, token, 12)
    assert made is not None
    session_id, session = made
    found = sessions.lookup(svc, session_id)
    assert found is not None and found.principal.org_name == "acme"
    assert found.principal == svc.store.authenticate(token)  # the key's own limits too
    assert found.csrf_token == session.csrf_token
    sessions.sign_out(svc, session_id)
    assert sessions.lookup(svc, session_id) is None

    expiring = sessions.sign_in(svc, token, 12)
    assert expiring is not None
    with svc.store.engine.begin() as conn:  # twelve hours later
        conn.execute(t.console_sessions.update().values(expires_at=now() - timedelta(seconds=1)))
    assert sessions.lookup(svc, expiring[0]) is None

    live = sessions.sign_in(svc, token, 12)
    assert live is not None
    svc.store.revoke_key(live[1].principal.key_id)  # revoked elsewhere: the CLI, say
    assert sessions.lookup(svc, live[0]) is None


def test_share_links_are_signed_scoped_and_mortal(svc: Services) -> None:
    token, ft = _org(svc, "acme")
    who = svc.store.authenticate(token)
    assert who is not None
    ckpt = svc.store.add_checkpoint(ft.id, 10, Kind.MODEL_OUTPUT, True, [FILE])
    with pytest.raises(ArchiveNotReady):
        shares.create(svc, SECRET, who, ckpt.id, 3600)
    svc.store.record_archive(ckpt.id, "archives/x.tar.zst", "cd" * 32, 999, lambda: True)
    link, text = shares.create(svc, SECRET, who, ckpt.id, 3600)
    opened, found = shares.open_link(svc, SECRET, text)
    assert (opened.id, found.ckpt.id, found.archive.size) == (link.id, ckpt.id, 999)
    with pytest.raises(ShareLinkNotFound):
        shares.open_link(svc, b"another secret" * 3, text)
    with pytest.raises(ShareLinkNotFound):
        shares.open_link(svc, SECRET, text[:-1] + ("A" if text[-1] != "A" else "B"))

    other_token, _ = _org(svc, "other")
    other = svc.store.authenticate(other_token)
    assert other is not None
    with pytest.raises(CheckpointNotFound):
        shares.create(svc, SECRET, other, ckpt.id, 3600)
    assert shares.revoke(svc, other, link.id) is None
    assert shares.list_links(svc, other.org_id) == []

    revoked = shares.revoke(svc, who, link.id)
    assert revoked is not None and revoked.revoked_by == who.key_id
    with pytest.raises(ShareLinkGone, match="revoked"):
        shares.open_link(svc, SECRET, text)


def test_an_expired_link_is_gone(svc: Services) -> None:
    token, ft = _org(svc, "acme")
    who = svc.store.authenticate(token)
    assert who is not None
    ckpt = svc.store.add_checkpoint(ft.id, 1, Kind.MODEL_OUTPUT, True, [FILE])
    svc.store.record_archive(ckpt.id, "archives/y.tar.zst", "ef" * 32, 5, lambda: True)
    link, _ = shares.create(svc, SECRET, who, ckpt.id, 60)
    past = now().replace(microsecond=0) - timedelta(days=1)
    with svc.store.engine.begin() as conn:
        conn.execute(
            t.share_links.update().where(t.share_links.c.id == link.id).values(expires_at=past)
        )
    (old,) = shares.list_links(svc, who.org_id)
    with pytest.raises(ShareLinkGone, match="expired"):
        shares.open_link(svc, SECRET, shares.token(SECRET, old))


def test_page_reads_are_scoped_to_the_organization(svc: Services) -> None:
    token, ft = _org(svc, "acme")
    _, theirs = _org(svc, "other")
    who = svc.store.authenticate(token)
    assert who is not None
    svc.store.add_checkpoint(ft.id, 5, Kind.MODEL_OUTPUT, True, [FILE])
    svc.store.add_metrics(ft.id, [MetricRow(1, {"train/loss": 1.0})])
    view = console.fine_tune_view(svc, who.org_id, ft.id)
    assert view is not None and view.checkpoints[0][0].files == (FILE,)
    assert len(view.metrics) == 1
    assert console.fine_tune_view(svc, who.org_id, theirs.id) is None
    page = console.list_fine_tunes(svc, who.org_id, text="ACME/")
    assert [f.id for f in page.items] == [ft.id] and page.pages == 1
    assert not console.revoke_key(svc, theirs.org_id, who.key_id)  # not their key
    assert svc.store.authenticate(token) is not None


def test_the_list_pages_newest_first(svc: Services) -> None:
    _, first = _org(svc, "acme")
    org_id = first.org_id
    for i in range(console.PAGE_SIZE + 4):
        svc.store.create_fine_tune(
            org_id, model="base", model_output_name=f"acme/run-{i}", training_type="Lora"
        )
    one = console.list_fine_tunes(svc, org_id)
    two = console.list_fine_tunes(svc, org_id, page=2)
    assert (one.total, one.pages, len(one.items), len(two.items)) == (30, 2, 25, 5)
    assert first.id == two.items[-1].id  # the oldest comes last
    assert console.list_fine_tunes(svc, org_id, page=99).page == 2
    assert console.list_fine_tunes(svc, org_id, training_type="Full").items == [first]
