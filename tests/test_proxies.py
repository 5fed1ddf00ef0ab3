"""Trusted proxies: Forwarded / X-Forwarded-For believed only from `trusted_proxies`, in the
access log, the download audit and the per-client limit of failed authentications.

Loopback has many addresses: the client connects from 127.0.0.5 (or .6, .7), nginx
reaches tunevault from 127.0.0.3 (`proxy_bind`), the only trusted proxy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.client.seeding import Seeded, seed_store
from tests.support.nginx import nginx_binary, run_nginx
from tests.support.server import LiveServer, run_server
from tunevault.models import DownloadRecord
from tunevault.service.context import open_services

PROXY = "127.0.0.3"
pytestmark = pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")


@dataclass(frozen=True)
class Stack:
    server: LiveServer
    nginx: str
    seeded: Seeded

    def get(self, path: str, *, via_nginx: bool, source: str, **kw: object) -> httpx.Response:
        base = self.nginx if via_nginx else self.server.url
        with httpx.Client(transport=httpx.HTTPTransport(local_address=source)) as c:
            return c.get(base + path, **kw)  # type: ignore[arg-type]

    def access_lines(self) -> list[dict[str, object]]:
        log = next(self.server.data_dir.glob("server-*.log")).read_text()
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        return [e for e in lines if e["logger"] == "tunevault.access"]

    def remote_of(self, request_id: str) -> object:
        for _ in range(50):  # the access line is written just after the answer leaves
            found = [e["remote"] for e in self.access_lines() if e["request_id"] == request_id]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no access line for {request_id}")

    def audit(self) -> list[DownloadRecord]:
        with open_services(self.seeded.settings) as svc:
            return svc.store.list_downloads(self.seeded.ft.org_id)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("proxies")
    seeded = seed_store(root / "data", {"config.json": 100, "model.safetensors": 4096})
    env = {
        "TUNEVAULT_TRUSTED_PROXIES": f"{PROXY}/32, 10.0.0.0/8",
        "TUNEVAULT_AUTH_FAILURES_PER_MINUTE": "3",
    }
    with run_server(root / "data", env=env) as server:
        locations = f"""
        location / {{
            proxy_pass {server.url};
            proxy_bind {PROXY};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}"""
        with run_nginx(root / "nginx", locations) as nginx:
            yield Stack(server, nginx, seeded)


def test_the_audit_and_access_log_name_the_client_behind_the_proxy(stack: Stack) -> None:
    agent = f"behind-{time.time_ns()}"
    headers = {
        "Authorization": f"Bearer {stack.seeded.token}",
        "User-Agent": agent,
        "X-Forwarded-For": "6.6.6.6",  # written by the client: proves nothing
        "Range": "bytes=0-0",
    }
    path = f"/v1/finetune/download?ft_id={stack.seeded.ft.id}&checkpoint=model_output_path"
    r = stack.get(path, via_nginx=True, source="127.0.0.5", headers=headers)
    assert r.status_code == 206
    r = stack.get(path, via_nginx=False, source="127.0.0.6", headers=headers)
    assert r.status_code == 206  # straight to tunevault: not a trusted proxy
    for _ in range(50):  # the audit is written in batches, off the request path
        mine = [row.client for row in stack.audit() if row.user_agent == agent]
        if len(mine) == 2:
            break
        time.sleep(0.1)
    assert sorted(mine) == ["127.0.0.5", "127.0.0.6"]
    remotes = {e["remote"] for e in stack.access_lines() if e["route"] == "/v1/finetune/download"}
    assert remotes == {"127.0.0.5", "127.0.0.6"}  # written before the audit's batch


def test_forwarded_header_from_a_trusted_proxy(stack: Stack) -> None:
    hops = 'for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711", for=10.1.2.3'
    headers = {"Forwarded": hops, "X-Request-Id": f"fwd-{time.time_ns()}"}
    stack.get("/v1/fine-tunes", via_nginx=False, source=PROXY, headers=headers)
    untrusted = {**headers, "X-Request-Id": f"fwd-{time.time_ns()}"}
    stack.get("/v1/fine-tunes", via_nginx=False, source="127.0.0.7", headers=untrusted)
    # 10.1.2.3 is inside a trusted network too: the client is the hop before it.
    assert stack.remote_of(headers["X-Request-Id"]) == "2001:db8:cafe::17"
    assert stack.remote_of(untrusted["X-Request-Id"]) == "127.0.0.7"


def test_failed_keys_are_limited_per_client_not_per_proxy(stack: Stack) -> None:
    bad = {"Authorization": "Bearer tv_0000000000000000_wrong"}
    statuses = [
        stack.get("/v1/fine-tunes", via_nginx=True, source="127.0.0.8", headers=bad).status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    # Another client behind the same proxy is not held back by the first one's failures,
    r = stack.get("/v1/fine-tunes", via_nginx=True, source="127.0.0.9", headers=bad)
    assert r.status_code == 401
    # and a client that forges X-Forwarded-For on every try gains nothing by it.
    forged = [
        stack.get(
            "/v1/fine-tunes",
            via_nginx=False,
            source="127.0.0.10",
            headers={**bad, "X-Forwarded-For": f"6.6.6.{i}"},
        )
        for i in range(4)
    ]
    assert [r.status_code for r in forged] == [401, 401, 401, 429]
    assert forged[-1].json()["error"]["code"] == "rate_limited"
    assert int(forged[-1].headers["retry-after"]) >= 1
    good = {"Authorization": f"Bearer {stack.seeded.token}"}
    r = stack.get("/v1/fine-tunes", via_nginx=True, source="127.0.0.9", headers=good)
    assert r.status_code == 200
