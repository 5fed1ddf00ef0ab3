"""API key expiry and rotation through the CLI and a real server, on SQLite and PostgreSQL:
an expired key is refused with its own code even while the replica's key cache holds it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import store_cli
from tests.support.server import LiveServer, run_server
from tunevault.service import sessions
from tunevault.service.context import open_services
from tunevault.settings import Settings

# A long cache: the expiry must be honoured by the cache itself, not by its timeout.
ENV = {"TUNEVAULT_AUTH_CACHE_SECONDS": "600"}


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


def create(settings: Settings, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        store_cli(settings, "keys", "create", "--org", "x", *args).stdout
    )
    return out


def get(server: LiveServer, token: str) -> httpx.Response:
    return httpx.get(server.url + "/v1/fine-tunes", headers={"Authorization": f"Bearer {token}"})


def until_refused(server: LiveServer, token: str, within: float = 30) -> httpx.Response:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        r = get(server, token)
        if r.status_code != 200:
            return r
        time.sleep(0.1)
    raise AssertionError("the key was still accepted")


def test_an_expired_key_is_refused_naming_the_fix(settings: Settings) -> None:
    lasting = create(settings, "--expires", "90d")
    at = datetime.fromisoformat(lasting["expires_at"])
    assert abs(at - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    with run_server(
        settings.data_dir, env={**ENV, "TUNEVAULT_DATABASE_URL": str(settings.database_url)}
    ) as server:
        short = create(settings, "--expires", "6s")  # time for the command and a request
        assert get(server, short["token"]).status_code == 200  # now in the replica's cache
        r = until_refused(server, short["token"])
        assert r.status_code == 401
        error = r.json()["error"]
        assert error["code"] == "key_expired" and error["type"] == "authentication_error"
        assert short["id"] in error["message"] and "tunevault keys rotate" in error["message"]
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert get(server, lasting["token"]).status_code == 200
    listed = json.loads(store_cli(settings, "keys", "list", "--json").stdout)["data"]
    by_id = {k["id"]: k for k in listed}
    assert by_id[short["id"]]["expires_at"] == short["expires_at"]
    assert by_id[lasting["id"]]["expires_at"] == lasting["expires_at"]
    text = store_cli(settings, "keys", "list").stdout
    assert "expired " in text and "expires " in text
    with open_services(settings) as svc:  # nor does an expired key sign in to the console
        assert sessions.sign_in(svc, short["token"], hours=1) is None
        assert sessions.sign_in(svc, lasting["token"], hours=1) is not None


def test_rotate_keeps_scopes_and_limits_and_retires_the_old_key(settings: Settings) -> None:
    old = create(
        settings,
        "--scope",
        "read",
        "--scope",
        "publish",
        "--requests-per-minute",
        "700",
        "--expires",
        "30d",
    )
    # The old key's new expiry reaches a replica that cached it within auth_cache_seconds,
    # as a revocation does (the default, 1 s, here).
    env = {"TUNEVAULT_DATABASE_URL": str(settings.database_url)}
    with run_server(settings.data_dir, env=env) as server:
        assert get(server, old["token"]).status_code == 200
        done = store_cli(settings, "keys", "rotate", old["id"], "--grace", "6s")
        assert f"rotating key {old['id']}" in done.stderr
        new = json.loads(done.stdout)
        assert get(server, new["token"]).status_code == 200
        assert get(server, old["token"]).status_code == 200  # in its grace
        r = until_refused(server, old["token"])  # then refused
        assert r.json()["error"]["code"] == "key_expired"
        assert get(server, new["token"]).status_code == 200
    assert new["id"] != old["id"] and new["token"] != old["token"]
    assert (new["org_id"], new["scopes"]) == (old["org_id"], ["publish", "read"])
    assert (new["requests_per_minute"], new["max_downloads"]) == (700, None)
    # The new key lives as long as the old one was made to: 30 days from now.
    lifetime = datetime.fromisoformat(new["expires_at"]) - datetime.now(UTC)
    assert timedelta(days=29, hours=23) < lifetime <= timedelta(days=30)
    assert new["replaces"]["id"] == old["id"]
    assert datetime.fromisoformat(new["replaces"]["expires_at"]) < datetime.now(UTC)
    again = store_cli(settings, "keys", "rotate", old["id"], ok=False)  # an expired key: no
    assert "no live key" in again.stderr and "tunevault keys create" in again.stderr


def test_bad_durations_are_refused_naming_the_form(settings: Settings) -> None:
    done = store_cli(settings, "keys", "create", "--org", "x", "--expires", "soon", ok=False)
    assert "--expires" in done.stderr and "90d" in done.stderr
