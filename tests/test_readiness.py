"""Readiness and outages: /readyz names the part that failed (bucket missing, S3 down,
PostgreSQL down), and a database outage answers 503 `database_unavailable` on every route."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx

from tests.support.postgres import run_postgres
from tests.support.seaweed import run_seaweedfs
from tests.support.server import LiveServer, run_server
from tunevault.models import Scope
from tunevault.service.context import open_services
from tunevault.settings import Settings


def not_ready(server: LiveServer, code: str) -> dict[str, str]:
    r = httpx.get(server.url + "/readyz")
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == code and int(r.headers["retry-after"]) > 0
    assert httpx.get(server.url + "/healthz").status_code == 200  # alive, not ready
    checks: dict[str, str] = r.json()["checks"]
    return checks


def test_readyz_with_the_bucket_missing_then_s3_down(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        s3 = contextlib.ExitStack()
        seaweed = s3.enter_context(run_seaweedfs(tmp_path / "seaweed"))
        stack.callback(s3.close)
        bucket = s3.enter_context(seaweed.bucket())
        env = seaweed.env()
        missing = stack.enter_context(
            run_server(
                tmp_path / "missing",
                env={**env, "TUNEVAULT_STORAGE_URL": seaweed.storage_url("tv-no-such-bucket")},
            )
        )
        # Was "ok": a stat of a missing key in a missing bucket looked like a missing key.
        checks = not_ready(missing, "storage_unavailable")
        assert checks == {"database": "ok", "storage": "unavailable (storage_unavailable)"}
        good = stack.enter_context(
            run_server(
                tmp_path / "good", env={**env, "TUNEVAULT_STORAGE_URL": seaweed.storage_url(bucket)}
            )
        )
        assert httpx.get(good.url + "/readyz").json()["status"] == "ready"
        assert seaweed.admin.list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # probe gone
        s3.close()  # SeaweedFS stops under the running server
        assert not_ready(good, "storage_unavailable")["database"] == "ok"


UNKNOWN = "ft-00000000-0000-0000-0000-000000000000"
NEW_FINE_TUNE = {"model": "m", "model_output_name": "x", "training_type": {"type": "Full"}}


def test_postgresql_down_answers_503_database_unavailable_everywhere(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        pg = contextlib.ExitStack()
        url = pg.enter_context(run_postgres())
        stack.callback(pg.close)
        with open_services(Settings(data_dir=tmp_path / "data", database_url=url)) as svc:
            org = svc.store.create_org("acme")
            _, token = svc.store.create_key(org.id, "admin", [Scope.ADMIN])
        env = {"TUNEVAULT_DATABASE_URL": url, "TUNEVAULT_JOB_POLL_SECONDS": "0.1"}
        server = stack.enter_context(run_server(tmp_path / "data", env=env))
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(server.url + "/v1/fine-tunes", headers=auth).status_code == 200
        log = next((tmp_path / "data").glob("server-*.log"))
        before = log.stat().st_size
        pg.close()  # PostgreSQL stops under the running server
        checks = not_ready(server, "database_unavailable")
        assert checks == {"database": "unavailable (database_unavailable)", "storage": "ok"}
        for method, path in (
            ("GET", "/v1/fine-tunes"),
            ("GET", f"/v1/finetune/download?ft_id={UNKNOWN}&checkpoint=merged"),  # was a 500
            ("HEAD", f"/v1/finetune/download?ft_id={UNKNOWN}&checkpoint=merged"),
            ("POST", "/v1/publish/fine-tunes"),
            ("GET", "/v1/admin/audit/downloads"),
        ):
            # Well-formed requests: the key is still cached, so each must reach the database.
            r = httpx.request(method, server.url + path, headers=auth, json=NEW_FINE_TUNE)
            assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, (path, r.text)
            if method != "HEAD":
                assert r.json()["error"]["code"] == "database_unavailable", path
        # Warnings, from the routes and the build worker's polling: no error tracebacks.
        logged = log.read_bytes()[before:]
        assert b"database unavailable on GET" in logged
        assert b"the database is unavailable" in logged and b"Traceback" not in logged
