"""Each failure reaches the Hub client as its own exception class, and another
organization's repos are exactly as missing as repos that do not exist."""

from __future__ import annotations

import httpx

from tests.hub.conftest import Hub

MISSING_FT = "ft-00000000-0000-0000-0000-000000000000"


def test_each_failure_raises_the_clients_own_exception(hub: Hub) -> None:
    lora, other = hub.demo.lora, hub.demo.other_ft
    calls = [
        ["file", MISSING_FT, "main", "config.json"],
        ["info", "nobody/nothing", "main", ""],
        ["file", other.id, "main", "config.json"],
        ["snapshot", other.model_output_name, "main", ""],
        ["file", lora.id, "step-99", "config.json"],
        ["info", lora.id, "nonsense", ""],
        ["file", lora.id, "model_output_path", "config.json"],
        ["file", lora.id, "main", "no/such/file.bin"],
    ]
    found = [f["raised"] for f in hub.run("failures", calls)]
    assert found == [
        "RepositoryNotFoundError",
        "RepositoryNotFoundError",
        "RepositoryNotFoundError",
        "RepositoryNotFoundError",
        "RevisionNotFoundError",
        "RevisionNotFoundError",
        "RevisionNotFoundError",
        "RemoteEntryNotFoundError",
    ]


def test_a_foreign_key_sees_no_repo(hub: Hub) -> None:
    lora = hub.demo.lora
    calls = [
        ["file", lora.id, "main", "config.json"],
        ["snapshot", lora.model_output_name, "adapter", ""],
        ["info", lora.id, "main", ""],
    ]
    found = hub.run("failures", calls, token=hub.demo.other_token)
    assert [f["raised"] for f in found] == ["RepositoryNotFoundError"] * 3
    assert all(f["status"] == 404 for f in found)


def test_a_bad_key_is_an_authentication_error(hub: Hub) -> None:
    calls = [["file", hub.demo.lora.id, "main", "config.json"], ["info", "x", "main", ""]]
    for token in (hub.demo.revoked_token, "tv_not_a_key"):
        found = hub.run("failures", calls, token=token)
        assert [(f["raised"], f["status"]) for f in found] == [("HfHubHTTPError", 401)] * 2
        assert "Invalid credentials in Authorization header" in found[0]["message"]


def test_error_headers_and_envelope(hub: Hub) -> None:
    auth = {"Authorization": f"Bearer {hub.demo.token}"}
    lora = hub.demo.lora
    r = httpx.head(f"{hub.demo.url}/{lora.id}/resolve/main/missing.txt", headers=auth)
    assert r.status_code == 404 and r.headers["x-error-code"] == "EntryNotFound"
    # The client caches "no such file" under the commit it is told.
    assert len(r.headers["x-repo-commit"]) == 40
    r = httpx.get(f"{hub.demo.url}/api/models/{lora.id}/revision/step-7", headers=auth)
    assert r.status_code == 404 and r.headers["x-error-code"] == "RevisionNotFound"
    assert r.json()["error"]["code"] == "revision_not_found"
    assert "available steps: 10, 20" in r.headers["x-error-message"]
    r = httpx.get(f"{hub.demo.url}/api/models/{lora.id}")
    assert r.status_code == 401 and "x-error-code" not in r.headers
    assert r.json()["error"]["code"] == "invalid_api_key"
