"""`tunevault admin` across organizations, on SQLite and PostgreSQL: the listings match
what each organization sees, and a delete is the owner's delete, recorded."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import store_cli
from tests.support.seeding import publish_and_build
from tests.support.server import run_server
from tunevault.models import FineTune, Scope
from tunevault.service.context import open_services
from tunevault.settings import Settings


def admin(settings: Settings, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return store_cli(settings, "admin", *args, ok=ok)


def as_json(settings: Settings, *args: str) -> Any:
    return json.loads(admin(settings, *args, "--json").stdout)


def _fine_tune(svc: Any, org_id: str, name: str) -> FineTune:
    ft: FineTune = svc.store.create_fine_tune(
        org_id, model="m", model_output_name=name, training_type="Full", status="completed"
    )
    return ft


@pytest.fixture
def seeded(tmp_path: Path, database_url: str) -> tuple[Settings, dict[str, Any]]:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    src = tmp_path / "src"
    src.mkdir()
    (src / "weights.bin").write_bytes(os.urandom(300_000))
    with open_services(settings) as svc:
        acme, beta = svc.store.create_org("acme"), svc.store.create_org("beta")
        _, acme_token = svc.store.create_key(acme.id, "rw", [Scope.READ, Scope.PUBLISH])
        svc.store.create_key(acme.id, "ro", [Scope.READ])
        gone, _ = svc.store.create_key(acme.id, "old", [Scope.READ])
        svc.store.revoke_key(gone.id)
        built = _fine_tune(svc, acme.id, "acme/one")
        publish_and_build(svc, built, src)
        plain = _fine_tune(svc, acme.id, "acme/two")
        theirs = _fine_tune(svc, beta.id, "beta/one")
    ids = {"acme": acme.id, "beta": beta.id, "built": built.id, "plain": plain.id}
    return settings, {**ids, "theirs": theirs.id, "token": acme_token}


def test_orgs_and_fine_tunes_across_organizations(
    seeded: tuple[Settings, dict[str, Any]],
) -> None:
    settings, s = seeded
    orgs = {o["org"]: o for o in as_json(settings, "orgs")["data"]}
    assert (orgs["acme"]["fine_tunes"], orgs["acme"]["keys"]) == (2, 2)  # revoked: not live
    assert (orgs["beta"]["fine_tunes"], orgs["beta"]["keys"]) == (1, 0)
    assert orgs["acme"]["source_bytes"] == 300_000 and orgs["acme"]["derived_bytes"] > 0
    assert orgs["beta"]["source_bytes"] == 0
    every = as_json(settings, "fine-tunes")["data"]
    assert {f["id"] for f in every} == {s["built"], s["plain"], s["theirs"]}
    only = as_json(settings, "fine-tunes", "--org", "beta")["data"]
    assert [(f["id"], f["org_id"]) for f in only] == [(s["theirs"], s["beta"])]
    text = admin(settings, "orgs").stdout
    assert "acme" in text and "beta" in text
    missing = admin(settings, "fine-tunes", "--org", "nobody", ok=False)
    assert "no organization named 'nobody'" in missing.stderr


def test_delete_any_fine_tune_with_a_dry_run_and_a_record(
    seeded: tuple[Settings, dict[str, Any]],
) -> None:
    settings, s = seeded
    dry = as_json(settings, "delete", s["built"], "--dry-run")
    assert dry == {
        "id": s["built"],
        "org_id": s["acme"],
        "model_output_name": "acme/one",
        "checkpoints": 1,
        "deleted": False,
    }
    assert s["built"] in {f["id"] for f in as_json(settings, "fine-tunes")["data"]}
    assert as_json(settings, "actions")["data"] == []
    env = {"TUNEVAULT_DATABASE_URL": str(settings.database_url)}
    with run_server(settings.data_dir, env=env) as server:
        url = f"{server.url}/v1/fine-tunes/{s['built']}"
        auth = {"Authorization": f"Bearer {s['token']}"}
        assert httpx.get(url, headers=auth).status_code == 200
        done = admin(settings, "delete", s["built"], "--json")
        assert json.loads(done.stdout)["deleted"] is True
        assert f"deleting fine-tune {s['built']}" in done.stderr
        r = httpx.get(url, headers=auth)  # gone for its owner, as after their own DELETE
        assert r.status_code == 404 and r.json()["error"]["code"] == "fine_tune_not_found"
    assert {f["id"] for f in as_json(settings, "fine-tunes")["data"]} == {s["plain"], s["theirs"]}
    (action,) = as_json(settings, "actions")["data"]
    assert (action["action"], action["target"], action["org_id"]) == (
        "delete_fine_tune",
        s["built"],
        s["acme"],
    )
    assert action["actor"] == getpass.getuser()
    again = admin(settings, "delete", s["built"], ok=False)
    assert "no fine-tune" in again.stderr and "tunevault admin fine-tunes" in again.stderr
