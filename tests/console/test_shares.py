"""Share links: made with `tunevault share` or the console, downloaded with curl and no key
(Range honoured, audited), refused once expired, revoked or altered."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.console.conftest import Console, csrf_of, expired_share_url, sign_in
from tunevault.models import Scope
from tunevault.service import shares
from tunevault.service.context import open_services
from tunevault.settings import Settings


def _cli(console: Console, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunevault", "share", *args, "--url", console.url],
        env={**os.environ, "TUNEVAULT_API_KEY": token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _make(console: Console, *args: str) -> dict[str, str]:
    r = _cli(console, console.seeded.token, f"{console.ft}:100", "--json", *args)
    assert r.returncode == 0, r.stderr
    link: dict[str, str] = json.loads(r.stdout)
    return link


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=60, check=False)


def _refusal(url: str) -> tuple[int, str]:
    r = httpx.get(url)
    return r.status_code, r.json()["error"]["code"]


def test_cli_link_downloads_with_curl_and_no_key(console: Console, tmp_path: Path) -> None:
    r = _cli(console, console.seeded.token, f"{console.ft}:100", "--expires", "24h")
    assert r.returncode == 0, r.stderr
    assert "making a share link" in r.stderr
    url = r.stdout.strip()
    assert url.startswith(f"{console.url}/shared/")
    out = tmp_path / "a.tar.zst"
    got = _curl("-f", "-o", str(out), url)
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == console.seeded.archive.sha256
    part = _curl("-f", "-r", "1000-1999", url)
    assert part.stdout == console.archive[1000:2000]
    # A cut download resumes with curl -C -.
    cut = tmp_path / "b.tar.zst"
    cut.write_bytes(console.archive[:5000])
    assert _curl("-f", "-C", "-", "-o", str(cut), url).returncode == 0
    assert cut.read_bytes() == console.archive


def test_share_downloads_are_audited(console: Console) -> None:
    link = _make(console)
    assert httpx.get(link["url"]).status_code == 200
    auth = {"Authorization": f"Bearer {console.admin_token}"}
    deadline = time.monotonic() + 30  # the audit is written in batches, off the request
    while time.monotonic() < deadline:
        rows = httpx.get(f"{console.url}/v1/admin/audit/downloads", headers=auth).json()["data"]
        if any(r["key_id"] == f"share:{link['id']}" for r in rows):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no audit row for the share link's download")
    assert link["id"] in sign_in(console.url, console.admin_token).get("/console/admin/audit").text


def test_altered_and_guessed_links_are_refused(console: Console) -> None:
    url = _make(console)["url"]
    head, sig = url.rsplit(".", 1)
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    assert _refusal(f"{head}.{flipped}") == (404, "share_link_not_found")
    link_id = head.rsplit("/", 1)[1]
    other_id = link_id[:-1] + ("0" if link_id[-1] != "0" else "1")
    assert _refusal(url.replace(link_id, other_id)) == (404, "share_link_not_found")
    assert _refusal(f"{head}") == (404, "share_link_not_found")  # no signature at all
    assert httpx.get(url).status_code == 200  # the real one still works


def test_revoked_link_is_gone(console: Console) -> None:
    link = _make(console)
    r = _cli(console, console.seeded.token, "--revoke", link["id"])
    assert r.returncode == 0, r.stderr
    status, code = _refusal(link["url"])
    assert (status, code) == (410, "share_link_gone")
    assert "revoked" in httpx.get(link["url"]).json()["error"]["message"]


def test_expired_link_is_gone(console: Console) -> None:
    url = expired_share_url(console)
    assert _refusal(url) == (410, "share_link_gone")
    assert "expired at" in httpx.get(url).json()["error"]["message"]


def test_scopes_and_tenancy_of_share_creation(console: Console) -> None:
    body = {"ft_id": f"{console.ft}:100"}
    read = httpx.post(
        f"{console.url}/v1/shares",
        json=body,
        headers={"Authorization": f"Bearer {console.read_token}"},
    )
    assert read.status_code == 403
    with open_services(console.seeded.settings) as svc:
        other = svc.store.get_org_by_name("other")
        assert other is not None
        _, other_token = svc.store.create_key(other.id, "p", [Scope.PUBLISH])
    theirs = httpx.post(
        f"{console.url}/v1/shares", json=body, headers={"Authorization": f"Bearer {other_token}"}
    )
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "fine_tune_not_found"
    bad = httpx.post(
        f"{console.url}/v1/shares",
        json={**body, "expires_in": 10},
        headers={"Authorization": f"Bearer {console.seeded.token}"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "expires_in"


def _share_urls(html: str) -> dict[str, str]:
    found = re.findall(r'<code class="share-url" id="share-([0-9a-f]+)">([^<]+)</code>', html)
    return dict(found)


def test_console_share_button_and_revoke(console: Console) -> None:
    c = sign_in(console.url, console.seeded.token)
    page = c.get(f"/console/fine-tunes/{console.ft}").text
    before = _share_urls(page)
    r = c.post(
        f"/console/fine-tunes/{console.ft}/shares",
        data={
            "csrf": csrf_of(page),
            "checkpoint_id": str(console.seeded.checkpoint_id),
            "hours": "2",
        },
    )
    assert r.status_code == 303
    page = c.get(f"/console/fine-tunes/{console.ft}").text
    ((link_id, url),) = [(i, u) for i, u in _share_urls(page).items() if i not in before]
    assert httpx.get(url).content == console.archive
    r = c.post(f"/console/shares/{link_id}/revoke", data={"csrf": csrf_of(page)})
    assert r.status_code == 303
    assert _refusal(url) == (410, "share_link_gone")


def test_share_secret_is_the_setting_or_one_kept_private(tmp_path: Path) -> None:
    assert shares.load_secret(Settings(data_dir=tmp_path, share_secret="s3cret")) == b"s3cret"
    first = shares.load_secret(Settings(data_dir=tmp_path))
    assert len(first) >= 40 and shares.load_secret(Settings(data_dir=tmp_path)) == first
    assert (tmp_path / "share_secret").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["share_secret"]  # no temporary left


def test_share_failures_follow_the_cli_exit_code_table(console: Console) -> None:
    """client/exitcodes.py: 4 not found, 3 unauthorised; `error: ...` on stderr, and with
    --json the error object on stdout."""
    gone = _cli(console, console.seeded.token, "--revoke", "0123456789abcdef", "--json")
    assert gone.returncode == 4, gone.stderr
    assert json.loads(gone.stdout)["error"]["code"] == "share_link_not_found"
    assert "error: no share link '0123456789abcdef'" in gone.stderr
    unknown = _cli(console, console.seeded.token, "ft-00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 4 and "tunevault ls" in unknown.stderr
    read_only = _cli(console, console.read_token, f"{console.ft}:100")
    assert read_only.returncode == 3 and read_only.stderr.startswith("making a share link")
