"""Operations on a live server: readiness, metrics, request ids and logs, audit, limits,
revocation and graceful shutdown."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.support.postgres import run_postgres
from tests.support.seeding import publish_and_build
from tests.support.server import LiveServer, run_server
from tunevault.models import KeyLimitOverrides, Scope
from tunevault.server.observability import AccessLogger
from tunevault.service.context import open_services
from tunevault.settings import Settings


@dataclass(frozen=True)
class Site:
    settings: Settings
    admin: str
    reader: str
    other_admin: str
    operator: str
    ft_id: str
    body: bytes


def make_site(data_dir: Path, size: int = 4 << 20) -> Site:
    settings = Settings(data_dir=data_dir)
    src = data_dir.parent / f"{data_dir.name}-src"
    src.mkdir(parents=True)
    (src / "weights.bin").write_bytes(os.urandom(size))
    with open_services(settings) as svc:
        org, other = svc.store.create_org("ops"), svc.store.create_org("else")
        _, admin = svc.store.create_key(org.id, "admin", [Scope.ADMIN])
        _, reader = svc.store.create_key(org.id, "reader", [Scope.READ])
        _, other_admin = svc.store.create_key(other.id, "admin", [Scope.ADMIN])
        ops = svc.store.create_org("operators")
        _, operator = svc.store.create_key(ops.id, "prometheus", [Scope.OPERATOR])
        ft = svc.store.create_fine_tune(
            org.id,
            model="m",
            model_output_name="ops/model",
            training_type="Full",
            status="completed",
        )
        archive = publish_and_build(svc, ft, src, step=7)
        body = b"".join(svc.storage.iter_range(archive.storage_key))
    return Site(settings, admin, reader, other_admin, operator, ft.id, body)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, LiveServer]]:
    s = make_site(tmp_path_factory.mktemp("ops") / "data")
    with run_server(s.settings.data_dir) as server:
        yield s, server


def h(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def dl_url(server: LiveServer, site: Site) -> str:
    return f"{server.url}/v1/finetune/download?ft_id={site.ft_id}&checkpoint=model_output_path"


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_readyz_and_healthz_are_public(site: tuple[Site, LiveServer]) -> None:
    _, server = site
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz").json()
    assert ready == {"status": "ready", "checks": {"database": "ok", "storage": "ok"}}


def test_readyz_fails_when_the_database_goes_away(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        pg = contextlib.ExitStack()
        url = pg.enter_context(run_postgres())
        stack.callback(pg.close)
        server = stack.enter_context(
            run_server(tmp_path / "data", env={"TUNEVAULT_DATABASE_URL": url})
        )
        assert httpx.get(server.url + "/readyz").status_code == 200
        pg.close()  # the database stops under the running server
        r = httpx.get(server.url + "/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["database"].startswith("unavailable")
        assert r.json()["checks"]["storage"] == "ok"
        assert httpx.get(server.url + "/healthz").status_code == 200  # alive, not ready


def test_metrics_need_the_operator_and_count_downloads(site: tuple[Site, LiveServer]) -> None:
    s, server = site
    for key in (s.reader, s.admin):  # an organization's admin sees no process-wide figures
        r = httpx.get(server.url + "/metrics", headers=h(key))
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    r = httpx.get(server.url + "/v1/fine-tunes", headers=h(s.operator))
    assert r.status_code == 403  # and the operator reads no organization's data
    before = httpx.get(server.url + "/metrics", headers=h(s.operator)).text
    r = httpx.get(dl_url(server, s), headers=h(s.reader))
    assert r.content == s.body
    httpx.get(server.url + "/v1/fine-tunes/ft-nope", headers=h(s.reader))
    after = httpx.get(server.url + "/metrics", headers=h(s.operator)).text
    sent = metric(after, "tunevault_bytes_served_total") - metric(
        before, "tunevault_bytes_served_total"
    )
    assert sent == len(s.body)
    assert 'tunevault_errors_total{code="fine_tune_not_found"}' in after
    assert "tunevault_downloads_in_flight 0.0" in after
    assert 'tunevault_build_queue_depth{state="queued"} 0.0' in after
    assert 'route="/v1/finetune/download"' in after  # templates, never raw ids
    assert s.ft_id not in after


def test_request_ids_and_logs_without_secrets(site: tuple[Site, LiveServer]) -> None:
    s, server = site
    r = httpx.get(dl_url(server, s), headers=h(s.reader, **{"X-Request-Id": "trace-42"}))
    assert r.headers["x-request-id"] == "trace-42"
    generated = httpx.get(
        server.url + "/v1/fine-tunes", headers=h(s.reader, **{"X-Request-Id": "bad id with spaces"})
    ).headers["x-request-id"]
    assert len(generated) == 32 and " " not in generated
    assert httpx.get(server.url + "/v1/nothing").headers["x-request-id"]
    log_path = next(s.settings.data_dir.glob("server-*.log"))
    lines = []
    for _ in range(50):  # the access line is written right after the response
        lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
        if any(x.get("request_id") == "trace-42" for x in lines):
            break
        time.sleep(0.05)
    mine = [x for x in lines if x.get("request_id") == "trace-42"]
    assert mine and mine[-1]["status"] == 200 and mine[-1]["route"] == "/v1/finetune/download"
    text = log_path.read_text()
    for token in (s.admin, s.reader, s.other_admin):
        assert token.split("_", 2)[2] not in text


def test_audit_lists_who_downloaded_what(site: tuple[Site, LiveServer]) -> None:
    s, server = site
    half = len(s.body) // 2
    httpx.get(dl_url(server, s), headers=h(s.reader))  # an older row for the page below
    httpx.get(dl_url(server, s), headers=h(s.reader, Range=f"bytes={half}-"))
    latest: dict[str, Any] = {}
    for _ in range(100):  # audit rows are written in batches, just after the answer
        url = server.url + "/v1/admin/audit/downloads?limit=5"
        rows = httpx.get(url, headers=h(s.admin)).json()["data"]
        if rows and rows[0]["range_start"] == half:
            latest = rows[0]
            break
        time.sleep(0.05)
    assert latest["ft_id"] == s.ft_id and latest["status"] == 206
    assert latest["range_start"] == half and latest["bytes_sent"] == len(s.body) - half
    assert latest["archive_sha256"] == hashlib.sha256(s.body).hexdigest()
    assert latest["kind"] == "model_output_path" and latest["step"] == 7
    assert (
        httpx.get(server.url + "/v1/admin/audit/downloads", headers=h(s.reader)).status_code == 403
    )
    assert (
        httpx.get(server.url + "/v1/admin/audit/downloads", headers=h(s.other_admin)).json()["data"]
        == []
    )
    page = httpx.get(
        server.url + f"/v1/admin/audit/downloads?before_id={latest['id']}", headers=h(s.admin)
    ).json()["data"]
    assert page and all(r["id"] < latest["id"] for r in page)


def first_status(url: str, token: str, want: int, tries: int = 100) -> int:
    """Ask every 50 ms until the answer is `want` (or the tries run out): its request number."""
    for n in range(1, tries + 1):
        if httpx.get(url, headers=h(token)).status_code == want:
            return n
        time.sleep(0.05)
    raise AssertionError(f"never answered {want} in {tries} tries")


def test_revocation_takes_effect_once_the_key_cache_expires(tmp_path: Path) -> None:
    s = make_site(tmp_path / "data")
    with open_services(s.settings) as svc:
        org = svc.store.get_org_by_name("ops")
        assert org is not None
        key, token = svc.store.create_key(org.id, "short-lived", [Scope.READ])
    env = {"TUNEVAULT_AUTH_CACHE_SECONDS": "0.5"}
    with run_server(s.settings.data_dir, env=env) as server:
        url = server.url + "/v1/fine-tunes"
        assert httpx.get(url, headers=h(token)).status_code == 200  # now cached
        with open_services(s.settings) as svc:
            svc.store.revoke_key(key.id)
        # Refused within the cache time (0.5 s: ten 50 ms tries), never served for long.
        assert first_status(url, token, 401) <= 20
        assert httpx.get(url, headers=h(token)).status_code == 401


def test_without_the_cache_revocation_is_at_once(tmp_path: Path) -> None:
    s = make_site(tmp_path / "data")
    with open_services(s.settings) as svc:
        org = svc.store.get_org_by_name("ops")
        assert org is not None
        key, token = svc.store.create_key(org.id, "short-lived", [Scope.READ])
    with run_server(s.settings.data_dir, env={"TUNEVAULT_AUTH_CACHE_SECONDS": "0"}) as server:
        url = server.url + "/v1/fine-tunes"
        assert httpx.get(url, headers=h(token)).status_code == 200
        with open_services(s.settings) as svc:
            svc.store.revoke_key(key.id)
        assert httpx.get(url, headers=h(token)).status_code == 401


def test_limits_are_a_property_of_each_key(tmp_path: Path) -> None:
    s = make_site(tmp_path / "data")
    with open_services(s.settings) as svc:
        org = svc.store.get_org_by_name("ops")
        assert org is not None
        tight, tight_token = svc.store.create_key(
            org.id, "tight", [Scope.READ], KeyLimitOverrides(requests_per_minute=3)
        )
    env = {"TUNEVAULT_RATE_LIMIT_PER_MINUTE": "1000", "TUNEVAULT_AUTH_CACHE_SECONDS": "0.2"}
    with run_server(s.settings.data_dir, env=env) as server:
        url = server.url + "/v1/fine-tunes"
        codes = [httpx.get(url, headers=h(tight_token)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        # The server's default holds for a key without limits of its own.
        assert {httpx.get(url, headers=h(s.reader)).status_code for _ in range(10)} == {200}
        cli = [sys.executable, "-m", "tunevault", "keys", "limits", tight.id]
        done = subprocess.run(
            [*cli, "--data-dir", str(s.settings.data_dir), "--requests-per-minute", "0"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(done.stdout)["requests_per_minute"] == 0
        # 0 is no limit: once the replica's cache has the new figure, nothing is refused.
        first_status(url, tight_token, 200)
        assert {httpx.get(url, headers=h(tight_token)).status_code for _ in range(10)} == {200}


def test_rate_and_concurrency_limits(tmp_path: Path) -> None:
    s = make_site(tmp_path / "data", size=64 << 20)
    env = {"TUNEVAULT_RATE_LIMIT_PER_MINUTE": "5", "TUNEVAULT_MAX_DOWNLOADS_PER_KEY": "1"}
    with run_server(s.settings.data_dir, env=env) as server:
        url = urlparse(server.url)
        # Hold one download open without reading it: the key's only download slot.
        slow = socket.create_connection((url.hostname, url.port))
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        path = dl_url(server, s).removeprefix(server.url)
        slow.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {s.reader}\r\n\r\n".encode()
        )
        assert b"200 OK" in slow.recv(4096)
        busy = httpx.get(dl_url(server, s), headers=h(s.reader))
        assert busy.status_code == 429 and busy.json()["error"]["code"] == "rate_limited"
        assert int(busy.headers["retry-after"]) > 0
        slow.close()
        codes = [
            httpx.get(server.url + "/v1/fine-tunes", headers=h(s.admin)).status_code
            for _ in range(7)
        ]
        assert codes[:5] == [200] * 5 and codes[-1] == 429
        # Another key has its own budget.
        assert httpx.get(server.url + "/v1/whoami", headers=h(s.other_admin)).status_code == 200


def test_sigterm_lets_a_download_in_flight_finish(tmp_path: Path) -> None:
    s = make_site(tmp_path / "data", size=48 << 20)
    with run_server(s.settings.data_dir) as server:
        url = urlparse(server.url)
        path = dl_url(server, s).removeprefix(server.url)
        conn = socket.create_connection((url.hostname, url.port))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {s.reader}"
            f"\r\nConnection: close\r\n\r\n".encode()
        )
        received = bytearray(conn.recv(65536))
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # New connections are refused while the old download goes on.
        with pytest.raises(OSError):
            socket.create_connection((url.hostname, url.port), timeout=2).close()
        while chunk := conn.recv(1 << 20):
            received += chunk
        conn.close()
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert b"200 OK" in head and body == s.body
        assert server.process.wait(30) == 0
    # The download finished after SIGTERM: its audit row was written before the exit.
    with open_services(s.settings) as svc:
        org = svc.store.get_org_by_name("ops")
        assert org is not None
        rows = svc.store.list_downloads(org.id)
    assert [(r.status, r.bytes_sent, r.ft_id) for r in rows] == [(200, len(s.body), s.ft_id)]


def test_access_log_is_switched_off_above_info() -> None:
    """`enabled` follows the logger's level (aiohttp asks it once per connection and then
    calls `log` for no request of it); the base class always says True."""
    logger = logging.getLogger("tunevault.test.access")
    access = AccessLogger(logger, "")
    logger.setLevel(logging.WARNING)
    assert not access.enabled
    logger.setLevel(logging.INFO)
    assert access.enabled
