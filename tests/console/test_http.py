"""The console over HTTP: sessions, CSRF, escaping, tenancy, the pages and the download
button, against a live server."""

from __future__ import annotations

import hashlib
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.console.conftest import EVAL_POINTS, EVIL, PROXY, TRAIN_POINTS, Console, csrf_of, sign_in
from tunevault.service import console as service_console
from tunevault.service.context import open_services


def test_pages_need_a_session(console: Console) -> None:
    r = httpx.get(f"{console.url}/console/fine-tunes/{console.ft}")
    assert r.status_code == 303
    assert r.headers["Location"].startswith("/console/sign-in?next=")
    assert console.ft in r.headers["Location"]
    # A Bearer key is the API's credential, not the console's.
    auth = {"Authorization": f"Bearer {console.seeded.token}"}
    assert httpx.get(f"{console.url}/console/", headers=auth).status_code == 303


def test_sign_in_makes_a_hashed_http_only_session(console: Console) -> None:
    c = httpx.Client(base_url=console.url)
    form = c.get("/console/sign-in")
    bad = c.post("/console/sign-in", data={"api_key": "tv_nope", "csrf": csrf_of(form.text)})
    assert bad.status_code == 401 and "not valid" in bad.text
    r = c.post(
        "/console/sign-in", data={"api_key": console.seeded.token, "csrf": csrf_of(form.text)}
    )
    assert r.status_code == 303
    cookie = next(h for h in r.headers.get_list("Set-Cookie") if h.startswith("tv_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; over TLS the cookie is Secure
    session_id = c.cookies["tv_session"]
    with open_services(console.seeded.settings) as svc, svc.store.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT id_sha256 FROM console_sessions")).scalars().all()
    assert hashlib.sha256(session_id.encode()).hexdigest() in stored
    assert session_id not in stored
    # The cookie is not an API credential.
    api = httpx.get(f"{console.url}/v1/fine-tunes", cookies={"tv_session": session_id})
    assert api.status_code == 401 and api.json()["error"]["code"] == "invalid_api_key"


def test_sign_in_refuses_a_post_without_the_form_token(console: Console) -> None:
    r = httpx.post(f"{console.url}/console/sign-in", data={"api_key": console.seeded.token})
    assert r.status_code == 403 and "tv_session" not in r.headers.get("Set-Cookie", "")


def test_fine_tune_page_shows_everything(console: Console) -> None:
    c = sign_in(console.url, console.seeded.token)
    listing = c.get("/console/")
    assert listing.status_code == 200 and console.ft in listing.text
    assert "Content-Security-Policy" in listing.headers
    assert "script-src 'self'" in listing.headers["Content-Security-Policy"]
    assert "<script>" not in re.sub(
        r'<script src="/console/static/console.js" defer>', "", listing.text
    )
    page = c.get(f"/console/fine-tunes/{console.ft}").text
    assert page.count('class="point point-train"') == TRAIN_POINTS
    assert page.count('class="point point-eval"') == EVAL_POINTS
    archive_sha = hashlib.sha256(console.archive).hexdigest()
    assert archive_sha in page
    for file_sha in console.seeded.archive.sha256, *(f.sha256 for f in _files(console)):
        assert file_sha in page
    assert f"together fine-tuning download {console.ft} --checkpoint-type default" in page
    assert f"tunevault download {console.ft} --checkpoint model_output_path" in page
    assert "curl -fL -C - -H" in page and "HF_ENDPOINT=" in page
    assert "training started" in page and "JOB_COMPLETE" in page


def _files(console: Console) -> list[object]:
    with open_services(console.seeded.settings) as svc:
        ckpt = svc.store.get_checkpoint(console.seeded.checkpoint_id)
    assert ckpt is not None
    return list(ckpt.files)


def test_list_filters_and_pages(console: Console) -> None:
    c = sign_in(console.url, console.seeded.token)
    found = c.get("/console/", params={"q": "llama-ft"}).text
    assert console.ft in found and console.evil_ft not in found
    assert console.ft not in c.get("/console/", params={"status": "running"}).text
    assert c.get("/console/", params={"status": "bogus"}).status_code == 400


def test_injected_names_and_messages_are_escaped(console: Console) -> None:
    c = sign_in(console.url, console.seeded.token)
    for path in ("/console/", f"/console/fine-tunes/{console.evil_ft}"):
        html = c.get(path).text
        for raw in ("<script>alert", "<img src=x", "onmouseover=alert(1) x=<"):
            assert raw not in html, (path, raw)
        assert "&lt;script&gt;alert(" in html
    assert EVIL not in c.get(f"/console/fine-tunes/{console.evil_ft}").text


def test_another_organizations_fine_tune_is_a_404_like_a_missing_one(console: Console) -> None:
    c = sign_in(console.url, console.seeded.token)
    theirs = c.get(f"/console/fine-tunes/{console.other_ft}")
    missing = c.get("/console/fine-tunes/ft-00000000-0000-0000-0000-000000000000")
    assert theirs.status_code == missing.status_code == 404
    assert "other/secret" not in theirs.text
    assert theirs.text.replace(console.other_ft, "X") == missing.text.replace(
        "ft-00000000-0000-0000-0000-000000000000", "X"
    )


def test_cross_site_and_tokenless_posts_are_refused(console: Console) -> None:
    c = sign_in(console.url, console.admin_token)
    keys = c.get("/console/admin/keys")
    token = csrf_of(keys.text)
    no_token = c.post("/console/admin/keys", data={"name": "x", "scope": "read"})
    assert no_token.status_code == 403
    evil = c.post(
        "/console/admin/keys",
        data={"name": "x", "scope": "read", "csrf": token},
        headers={"Origin": "http://evil.example"},
    )
    assert evil.status_code == 403
    fetch_meta = c.post(
        "/console/admin/keys",
        data={"name": "x", "scope": "read", "csrf": token},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert fetch_meta.status_code == 403
    assert ">x<" not in c.get("/console/admin/keys").text  # none of them made a key


def test_admin_creates_a_key_shown_once_and_revokes_it(console: Console) -> None:
    c = sign_in(console.url, console.admin_token)
    token = csrf_of(c.get("/console/admin/keys").text)
    made = c.post(
        "/console/admin/keys",
        data={"name": "ci-bot", "scope": ["read", "publish"], "csrf": token},
        headers={"Origin": console.url},
    )
    assert made.status_code == 201
    new_token = re.search(r'<code id="new-token">(tv_[^<]+)</code>', made.text)
    assert new_token
    assert new_token.group(1) not in c.get("/console/admin/keys").text  # shown once
    # The new key signs in; revoking it from the admin page ends that session at once.
    victim = sign_in(console.url, new_token.group(1))
    assert victim.get("/console/").status_code == 200
    key_id = new_token.group(1).split("_")[1]
    r = c.post(f"/console/admin/keys/{key_id}/revoke", data={"csrf": token})
    assert r.status_code == 303
    assert victim.get("/console/").status_code == 303
    api = httpx.get(
        f"{console.url}/v1/fine-tunes", headers={"Authorization": f"Bearer {new_token.group(1)}"}
    )
    assert api.status_code == 401


def test_read_keys_see_no_admin_pages(console: Console) -> None:
    c = sign_in(console.url, console.read_token)
    assert c.get("/console/admin/keys").status_code == 403
    assert c.get("/console/admin/audit").status_code == 403
    assert "Create share link" not in c.get(f"/console/fine-tunes/{console.ft}").text


def test_sign_out_kills_the_cookie(console: Console) -> None:
    c = sign_in(console.url, console.seeded.token)
    cookie = c.cookies["tv_session"]
    token = csrf_of(c.get("/console/").text)
    r = c.post("/console/sign-out", data={"csrf": token})
    assert r.status_code == 303 and r.headers["Location"] == "/console/sign-in"
    replay = httpx.get(f"{console.url}/console/", cookies={"tv_session": cookie})
    assert replay.status_code == 303


def test_download_button_serves_the_archive_with_ranges(console: Console) -> None:
    c = sign_in(console.url, console.read_token)
    html = c.get(f"/console/fine-tunes/{console.ft}").text
    href = re.search(r'class="button download" download href="([^"]+)"', html)
    assert href
    whole = c.get(href.group(1))
    assert whole.status_code == 200 and whole.content == console.archive
    part = c.get(href.group(1), headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == console.archive[100:200]


def test_storage_and_base_model_pages(console: Console) -> None:
    c = sign_in(console.url, console.seeded.token)
    storage = c.get("/console/storage").text
    blob_bytes = 300_000 + 120 + 1000
    assert f"({blob_bytes} bytes)" in storage
    assert c.get("/console/base-models").status_code == 200
    assert c.get("/console/static/console.css").headers["Content-Type"].startswith("text/css")
    assert c.get("/console/static/..%2Fviews.py").status_code == 404


def test_pasted_commands_download_the_checkpoint(console: Console, tmp_path: Path) -> None:
    """The together CLI, tunevault and curl commands, pasted into a shell as shown, save
    the archive; the HF_ENDPOINT one (`hf download`) the checkpoint's files."""
    c = sign_in(console.url, console.read_token)
    html_page = c.get(f"/console/fine-tunes/{console.ft}").text
    shown = dict(
        re.findall(
            r'-label">([^<]+)</span>\s*<pre><code id="cmd-[0-9]+-[0-9]">([^<]+)</code>', html_page
        )
    )
    assert set(shown) == {"together CLI", "tunevault", "curl", "HF_ENDPOINT"}
    # `tunevault` on PATH runs this checkout (an installed entry script may be another's).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tunevault").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tunevault "$@"\n')
    (bin_dir / "tunevault").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TUNEVAULT_API_KEY": console.read_token,
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    env.pop("TOGETHER_PROJECT_ID", None)
    for label in ("together CLI", "tunevault", "curl"):
        out = tmp_path / label.replace(" ", "-")
        out.mkdir()
        command = html.unescape(shown[label])
        r = subprocess.run(
            ["bash", "-c", command], env=env, cwd=out, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, (label, r.stdout, r.stderr)
        (saved,) = [p for p in out.rglob("*") if p.is_file()]
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == console.seeded.archive.sha256, (
            label
        )
    _check_hf_download(console, html.unescape(shown["HF_ENDPOINT"]), env, tmp_path)


def _check_hf_download(console: Console, command: str, env: dict[str, str], tmp: Path) -> None:
    """`hf download` saves into its cache and prints the snapshot's folder: every file of
    the checkpoint is there, with the sha256 the store recorded."""
    # Other test modules set HF_HUB_OFFLINE in this process (their models come from configs).
    env = {k: v for k, v in env.items() if k != "HF_HUB_OFFLINE"}
    env |= {"HF_HOME": str(tmp / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    r = subprocess.run(
        ["bash", "-c", command], env=env, cwd=tmp, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    # The folder is the last line (`  path: <folder>` in newer `hf` versions).
    snapshot = Path(r.stdout.strip().splitlines()[-1].strip().removeprefix("path: "))
    with open_services(console.seeded.settings) as svc:
        view = service_console.fine_tune_view(svc, console.seeded.ft.org_id, console.ft)
    assert view is not None
    ((ckpt, _),) = view.checkpoints
    got = {
        p.relative_to(snapshot).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in snapshot.rglob("*")
        if p.is_file()
    }
    assert got == {f.path: f.sha256 for f in ckpt.files}


GUESSER = "127.0.0.9"  # its own address: the limit it reaches is no other test's


def test_behind_a_tls_proxy_the_cookie_is_secure(console: Console) -> None:
    """A TLS-terminating proxy speaks http to us and says X-Forwarded-Proto: https."""
    https = console.url.replace("http://", "https://")
    proxied = {"X-Forwarded-Proto": "https"}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=PROXY)) as proxy:
        form = proxy.get(f"{console.url}/console/sign-in", headers=proxied)
        assert "Secure" in form.headers["Set-Cookie"]  # so the client here must send it itself
        sign_in_cookie = form.headers["Set-Cookie"].split(";")[0]
        r = proxy.post(
            f"{console.url}/console/sign-in",
            data={"api_key": console.seeded.token, "csrf": csrf_of(form.text)},
            headers={**proxied, "Origin": https, "Cookie": sign_in_cookie},
        )
        assert r.status_code == 303
        cookie = next(h for h in r.headers.get_list("Set-Cookie") if h.startswith("tv_session="))
        assert "Secure" in cookie
        page = proxy.get(
            f"{console.url}/console/fine-tunes/{console.ft}",
            headers={**proxied, "Cookie": cookie.split(";")[0]},
        ).text
    assert f"TUNEVAULT_URL={https} " in page


def test_x_forwarded_proto_from_a_client_is_ignored(console: Console) -> None:
    """Not from a trusted proxy: the header would only let a client pick our links' scheme."""
    form = httpx.get(f"{console.url}/console/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in form.headers["Set-Cookie"]
    c = sign_in(console.url, console.seeded.token)
    page = c.get(f"/console/fine-tunes/{console.ft}", headers={"X-Forwarded-Proto": "https"}).text
    assert f"TUNEVAULT_URL={console.url} " in page


def test_guessing_keys_at_sign_in_is_limited_per_address(console: Console) -> None:
    """Wrong keys at sign-in count like wrong API keys (auth_failures_per_minute, 60): past
    the limit the address is refused, on the console and on the API, a right key too."""
    with httpx.Client(
        base_url=console.url, transport=httpx.HTTPTransport(local_address=GUESSER)
    ) as c:
        token = csrf_of(c.get("/console/sign-in").text)
        answers = [
            c.post("/console/sign-in", data={"api_key": f"tv_guess{i}", "csrf": token})
            for i in range(61)
        ]
        assert {r.status_code for r in answers[:60]} == {401}
        assert answers[60].status_code == 429 and "Retry-After" in answers[60].headers
        right = c.post("/console/sign-in", data={"api_key": console.seeded.token, "csrf": token})
        assert right.status_code == 429
        api = c.get("/v1/fine-tunes", headers={"Authorization": f"Bearer {console.seeded.token}"})
        assert api.status_code == 429 and api.json()["error"]["code"] == "rate_limited"
    assert sign_in(console.url, console.seeded.token).get("/console/").status_code == 200


def test_an_admin_grants_only_the_organizations_scopes(console: Console) -> None:
    c = sign_in(console.url, console.admin_token)
    token = csrf_of(c.get("/console/admin/keys").text)
    r = c.post("/console/admin/keys", data={"name": "x", "scope": "root", "csrf": token})
    assert r.status_code == 400 and "scope must be read, publish or admin" in r.text
