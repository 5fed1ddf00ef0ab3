"""Usage per organization (source and derived bytes apart) and the quota on source bytes:
the store on SQLite and PostgreSQL, the admin route and refusals through the real server,
and `tunevault usage`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import Demo, FreshOrg
from tests.support.publishing import api_client, sha, upload
from tests.support.seeding import publish_and_build
from tests.support.server import run_server
from tunevault.errors import QuotaExceeded
from tunevault.metadata import tables as t
from tunevault.metadata.base import now
from tunevault.models import Kind, Scope
from tunevault.publisher.uploader import PublishClient
from tunevault.service import usage
from tunevault.service.context import open_services
from tunevault.settings import Settings


def _cli(data_dir: Path, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "tunevault", "usage", "--data-dir", str(data_dir), *args, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, object] = json.loads(done.stdout)
    return out


def test_source_and_derived_bytes_per_organization(database_url: str, tmp_path: Path) -> None:
    src = tmp_path / "out"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3000))
    (src / "b.bin").write_bytes(os.urandom(5000))
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        svc.store.create_org("idle")
        ft = svc.store.create_fine_tune(
            org.id, model="m", model_output_name="acme/x", training_type="Full", status="running"
        )
        archive = publish_and_build(svc, ft, src)
        found = {u.org: u for u in usage.usage(svc)}
        assert found["acme"].source_bytes == 8000
        assert found["acme"].archive_bytes == archive.size > 0
        assert found["acme"].merged_bytes == 0
        assert found["acme"].derived_bytes == archive.size
        assert (found["idle"].source_bytes, found["idle"].derived_bytes) == (0, 0)
        usage.set_quota(svc, "acme", 8000)
        usage.check_quota(svc, org.id, 0)  # at the quota is within it
        with pytest.raises(QuotaExceeded, match="to 8001, past its quota of 8000"):
            usage.check_quota(svc, org.id, 1)
        assert usage.set_quota(svc, "acme", None).source_quota_bytes is None
        usage.check_quota(svc, org.id, 10**12)


def test_admin_route_counts_merged_files_as_derived(demo: Demo) -> None:
    with open_services(demo.settings) as svc:
        org_id = demo.lora.org_id
        _, admin = svc.store.create_key(org_id, "admin", [Scope.ADMIN])
        merged: set[tuple[str, int]] = set()
        uploaded: set[str] = set()
        for ft in (demo.lora, demo.full):
            files_of = svc.store.fine_tune_files(ft.id)
            for c in svc.store.list_checkpoints(ft.id):
                files = {(f.sha256, f.size) for f in files_of.get(c.id, ())}
                merged |= files if c.kind is Kind.MERGED else set()
                uploaded |= {s for s, _ in files} if c.kind is not Kind.MERGED else set()
        for base in svc.store.list_base_models(org_id):
            uploaded |= {f.sha256 for f in base.files}
        source = sum(svc.store.org_blob_sizes(org_id, uploaded).values())
    r = httpx.get(demo.url + "/v1/admin/usage", headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["org_id"] == org_id
    assert body["merged_bytes"] == sum(n for _, n in merged) > 0
    assert body["archive_bytes"] == sum(a.size for a in demo.archives.values())
    assert body["derived_bytes"] == body["merged_bytes"] + body["archive_bytes"]
    assert body["source_bytes"] == source > 0
    denied = httpx.get(
        demo.url + "/v1/admin/usage", headers={"Authorization": f"Bearer {demo.token}"}
    )
    assert denied.status_code == 403  # publish and read keys do not see it


def _org_name(demo: Demo, org_id: str) -> str:
    with open_services(demo.settings) as svc:
        return usage.org_usage(svc, org_id).org


def test_quota_refuses_before_any_upload(demo: Demo, fresh_org: FreshOrg) -> None:
    name = _org_name(demo, fresh_org.id)
    small, big = os.urandom(1000), os.urandom(5000)
    with api_client(demo.url, fresh_org.token) as c:
        upload(c, small)
        set_to = _cli(demo.settings.data_dir, "--org", name, "--set-quota", "4000")
        assert set_to["data"] == [
            {**_cli(demo.settings.data_dir, "--org", name)["data"][0], "source_quota_bytes": 4000}  # type: ignore[index]
        ]
        bad = c.post("/v1/publish/blobs/check", json={"sha256": [sha(big)], "sizes": [1, 2]})
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, "sizes")
        check = {"sha256": [sha(small), sha(big)], "sizes": [1000, 5000]}
        r = c.post("/v1/publish/blobs/check", json=check)
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["code"] == "quota_exceeded"
        assert "to 6000, past its quota of 4000 (1000 used)" in err["message"]
        # A client that sends no sizes is refused at the PUT, before its body is read.
        r = c.put(f"/v1/publish/blobs/{sha(big)}", content=big, headers={"Upload-Length": "5000"})
        assert (r.status_code, r.json()["error"]["code"]) == (413, "quota_exceeded")
        head = c.head(f"/v1/publish/blobs/{sha(big)}")
        assert (head.status_code, head.headers["Upload-Offset"]) == (404, "0")  # nothing kept
        assert _cli(demo.settings.data_dir, "--org", name)["data"][0]["source_bytes"] == 1000  # type: ignore[index]
        # The real publisher asks with sizes, and gets the error class back.
        with PublishClient(demo.url, fresh_org.token) as client, pytest.raises(QuotaExceeded):
            client.missing({sha(big): 5000})
        # Under the quota, publishing goes on.
        fits = os.urandom(3000)
        r = c.post("/v1/publish/blobs/check", json={"sha256": [sha(fits)], "sizes": [3000]})
        assert r.json() == {"missing": [sha(fits)]}
        upload(c, fits)
    assert _cli(demo.settings.data_dir, "--org", name)["data"][0]["source_bytes"] == 4000  # type: ignore[index]


def test_usage_command_refusals(demo: Demo) -> None:
    base = [sys.executable, "-m", "tunevault", "usage", "--data-dir", str(demo.settings.data_dir)]
    no_org = subprocess.run([*base, "--set-quota", "10", "--json"], capture_output=True, text=True)
    assert no_org.returncode == 2 and "needs --org" in json.loads(no_org.stdout)["error"]["message"]
    missing = subprocess.run([*base, "--org", "nobody", "--json"], capture_output=True, text=True)
    assert missing.returncode == 4
    assert json.loads(missing.stdout)["error"]["code"] == "not_found"


def test_push_past_the_quota_uploads_nothing(
    demo: Demo, fresh_org: FreshOrg, tmp_path: Path
) -> None:
    from tests.publisher import helpers

    name = _org_name(demo, fresh_org.id)
    _cli(demo.settings.data_dir, "--org", name, "--set-quota", "1000")
    root = helpers.trainer_output(tmp_path / "run", lora=False)
    env = {**os.environ, "TUNEVAULT_URL": demo.url, "TUNEVAULT_API_KEY": fresh_org.token}
    proc = subprocess.run(
        [sys.executable, "-m", "tunevault", "push", str(root), "--model", "org/base", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    err = json.loads(proc.stdout)["error"]
    assert err["code"] == "quota_exceeded" and "past its quota of 1000 (0 used)" in err["message"]
    assert _cli(demo.settings.data_dir, "--org", name)["data"][0]["source_bytes"] == 0  # type: ignore[index]
    assert not list((demo.settings.data_dir / "uploads").glob(f"{fresh_org.id}/*"))


def _stored(settings: Settings) -> dict[str, object]:
    """Everything a publish could leave: keys and pending writes in the store, files in
    the server's upload directory, and the rows of blobs, checkpoints, fine-tunes, jobs."""
    tables = (t.blobs, t.org_blobs, t.fine_tunes, t.checkpoints, t.checkpoint_files, t.build_jobs)
    with open_services(settings) as svc:
        with svc.store.engine.connect() as conn:
            rows = {
                tb.name: conn.execute(sa.select(sa.func.count()).select_from(tb)).scalar()
                for tb in tables
            }
        return {
            "keys": list(svc.storage.list()),
            "pending": svc.storage.abort_stale_writes(now() + timedelta(days=1), dry_run=True),
            "scratch": list(svc.storage.scratch_paths()),
            "uploads": [p for p in (settings.data_dir / "uploads").rglob("*") if p.is_file()],
            **rows,
        }


def test_quota_refusals_store_nothing_on_each_storage(
    settings_on_each_storage: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On local disk and on SeaweedFS: past the quota, the upload route and `tunevault
    push` are refused with 413 `quota_exceeded` before a byte is uploaded, and neither the
    store nor the database keeps anything of them."""
    from tests.publisher import helpers

    settings = settings_on_each_storage
    monkeypatch.setenv("TUNEVAULT_STORAGE_URL", settings.resolved_storage_url())
    with open_services(settings) as svc:
        org = svc.store.create_org("capped")
        _, token = svc.store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
    small, big = os.urandom(1000), os.urandom(5000)
    root = helpers.trainer_output(tmp_path / "run", lora=False)
    with run_server(settings.data_dir) as server, api_client(server.url, token) as c:
        upload(c, small)
        _cli(settings.data_dir, "--org", "capped", "--set-quota", "4000")
        before = _stored(settings)
        assert before["keys"] and not before["pending"]
        check = {"sha256": [sha(small), sha(big)], "sizes": [1000, 5000]}
        r = c.post("/v1/publish/blobs/check", json=check)
        assert (r.status_code, r.json()["error"]["code"]) == (413, "quota_exceeded")
        assert "to 6000, past its quota of 4000 (1000 used)" in r.json()["error"]["message"]
        r = c.put(f"/v1/publish/blobs/{sha(big)}", content=big, headers={"Upload-Length": "5000"})
        assert (r.status_code, r.json()["error"]["code"]) == (413, "quota_exceeded")
        env = {**os.environ, "TUNEVAULT_URL": server.url, "TUNEVAULT_API_KEY": token}
        proc = subprocess.run(
            [sys.executable, "-m", "tunevault", "push", str(root), "--model", "org/base", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert json.loads(proc.stdout)["error"]["code"] == "quota_exceeded"
        assert _stored(settings) == before
