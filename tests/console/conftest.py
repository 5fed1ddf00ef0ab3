"""A live tunevault for the console tests: organization acme with a clean fine-tune (metric
rows, events, one built checkpoint), one named with script and attribute injections, and
another organization's fine-tune."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from tests.client.seeding import Seeded, add_fine_tune, archive_bytes, seed_store
from tests.support.server import LiveServer, run_server
from tunevault.metadata import tables as t
from tunevault.metadata.base import now
from tunevault.models import MetricRow, NewEvent, Scope
from tunevault.service import shares
from tunevault.service.context import open_services

# Breaks out of text, of a quoted attribute and of an unquoted one, if anything is unescaped.
EVIL = "<script>alert('name')</script>\"' onmouseover=alert(1) x=<img src=x onerror=alert(2)>"
TRAIN_POINTS, EVAL_POINTS = 12, 3
# The TLS-terminating proxy's address (loopback has many): only it is believed about
# X-Forwarded-Proto. The tests' own requests come from 127.0.0.1, an ordinary client.
PROXY = "127.0.0.3"


@dataclass(frozen=True)
class Console:
    server: LiveServer
    seeded: Seeded  # the clean fine-tune (acme, read + publish key)
    archive: bytes
    admin_token: str
    read_token: str
    evil_ft: str
    other_ft: str  # organization "other"

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ft(self) -> str:
        return self.seeded.ft.id


def _record(seeded: Seeded) -> None:
    with open_services(seeded.settings) as svc:
        rows = [MetricRow(s, {"train/loss": 3.0 / s}) for s in range(1, TRAIN_POINTS + 1)]
        rows += [MetricRow(s, {"eval/loss": 2.0 / s}) for s in (4, 8, 12)]
        svc.store.add_metrics(seeded.ft.id, rows)
        svc.store.add_events(
            seeded.ft.id,
            [NewEvent("JOB_START", "training started"), NewEvent("JOB_COMPLETE", "done", step=12)],
        )


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    data_dir = tmp_path_factory.mktemp("console")
    seeded = seed_store(data_dir, {"model.safetensors": 300_000, "config.json": 120})
    _record(seeded)
    evil = add_fine_tune(seeded.settings, seeded.token, {"weights.bin": 1000}, name=EVIL)
    with open_services(seeded.settings) as svc:
        svc.store.add_events(evil.ft.id, [NewEvent("JOB_START", EVIL, level="error")])
        org = svc.store.get_org_by_name("acme")
        assert org is not None
        _, admin = svc.store.create_key(org.id, "admin", [Scope.ADMIN])
        _, read = svc.store.create_key(org.id, "reader", [Scope.READ])
        other = svc.store.create_org("other")
        other_ft = svc.store.create_fine_tune(
            other.id, model="m", model_output_name="other/secret", training_type="Full"
        )
    with run_server(data_dir, env={"TUNEVAULT_TRUSTED_PROXIES": PROXY}) as server:
        yield Console(server, seeded, archive_bytes(seeded), admin, read, evil.ft.id, other_ft.id)


def sign_in(url: str, token: str) -> httpx.Client:
    """A browser-like client signed in with `token`: cookies kept, redirects not followed."""
    c = httpx.Client(base_url=url, timeout=30)
    form = c.get("/console/sign-in")
    assert form.status_code == 200, form.text
    r = c.post("/console/sign-in", data={"api_key": token, "csrf": csrf_of(form.text)})
    assert r.status_code == 303, r.text
    assert r.headers["Location"] == "/console/"
    return c


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def expired_share_url(console: Console) -> str:
    """The URL of a link issued two hours ago for one hour: signed right, its time up."""
    settings = console.seeded.settings
    with open_services(settings) as svc:
        who = svc.store.authenticate(console.seeded.token)
        assert who is not None
        secret = shares.load_secret(settings)
        link, _ = shares.create(svc, secret, who, console.seeded.checkpoint_id, 3600)
        past = now().replace(microsecond=0) - timedelta(hours=2)
        with svc.store.engine.begin() as conn:
            conn.execute(
                t.share_links.update()
                .where(t.share_links.c.id == link.id)
                .values(created_at=past, expires_at=past + timedelta(hours=1))
            )
        (old,) = [x for x in shares.list_links(svc, who.org_id) if x.id == link.id]
    return f"{console.url}/shared/{shares.token(secret, old)}"
