"""A real tunevault server with an organization and a read+publish key, for publishing tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.server import LiveServer, run_server
from tunevault.models import Scope
from tunevault.service.context import open_services
from tunevault.settings import Settings


@dataclass(frozen=True)
class Live:
    server: LiveServer
    token: str

    @property
    def url(self) -> str:
        return self.server.url

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
        )

    def get(self, path: str, **params: Any) -> Any:
        with self.http() as c:
            r = c.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, path: str, body: Any) -> Any:
        with self.http() as c:
            r = c.post(path, json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("publish-server")
    with open_services(Settings(data_dir=data_dir)) as svc:
        org = svc.store.create_org("trainers")
        _, token = svc.store.create_key(org.id, "rw", [Scope.READ, Scope.PUBLISH])
    with run_server(data_dir) as server:
        yield Live(server=server, token=token)
