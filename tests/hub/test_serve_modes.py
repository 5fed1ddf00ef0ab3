"""Hub files in the other serve modes: presigned redirects to SeaweedFS, X-Accel behind nginx."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.client.seeding import Seeded, add_fine_tune, seed_store
from tests.hub.conftest import run_client, tree_bytes
from tests.support.nginx import nginx_binary, run_nginx, x_accel_locations
from tests.support.seaweed import run_seaweedfs
from tests.support.server import run_server
from tunevault.models import Scope
from tunevault.service.context import open_services
from tunevault.settings import Settings

SIZES = {"config.json": 700, "model.safetensors": 3 << 20, "tokenizer/tokenizer.json": 20_000}


def _sources(seeded: Seeded) -> dict[str, bytes]:
    return tree_bytes(seeded.data_dir / "src" / seeded.ft.id)


def test_redirect_mode_on_seaweedfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with run_seaweedfs(tmp_path / "seaweed") as seaweed, seaweed.bucket() as bucket:
        seaweed.patch_env(monkeypatch)  # boto3 in this process seeds the bucket
        settings = Settings(data_dir=tmp_path / "data", storage_url=seaweed.storage_url(bucket))
        with open_services(settings) as svc:
            org = svc.store.create_org("acme")
            _, token = svc.store.create_key(org.id, "ro", [Scope.READ])
        seeded = add_fine_tune(settings, token, SIZES)
        env = {
            **seaweed.env(),
            "TUNEVAULT_STORAGE_URL": str(settings.storage_url),
            "TUNEVAULT_SERVE_MODE": "redirect",
        }
        with run_server(settings.data_dir, env=env) as server:
            url = f"{server.url}/{seeded.ft.id}/resolve/main/model.safetensors"
            head = httpx.head(url, headers={"Authorization": f"Bearer {token}"})
            assert head.status_code == 307
            assert head.headers["location"].startswith(seaweed.endpoint_url)
            assert head.headers["x-linked-size"] == str(SIZES["model.safetensors"])
            assert len(head.headers["x-repo-commit"]) == 40
            found = run_client(
                server.url, token, tmp_path / "hf", "snapshots", [[seeded.ft.id, "main"]]
            )
        assert tree_bytes(Path(found[f"{seeded.ft.id}@main"])) == _sources(seeded)
        with open_services(settings) as svc:
            records = svc.store.list_downloads(org.id)
        # The HEAD of each file hands out its URL: one audited redirect per file, and ours.
        assert sorted((r.status, r.mode, r.kind) for r in records) == [
            (307, "redirect", "hub:model_output_path")
        ] * (len(SIZES) + 1)


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")
def test_x_accel_behind_nginx(tmp_path: Path) -> None:
    seeded = seed_store(tmp_path / "data", SIZES)
    prefix = "/_tunevault_blobs/"
    env = {"TUNEVAULT_SERVE_MODE": "x-accel"}
    with (
        run_server(seeded.data_dir, env=env) as server,
        run_nginx(
            tmp_path / "nginx", x_accel_locations(server.url, seeded.data_dir / "blobs", prefix)
        ) as front,
    ):
        head = httpx.head(
            f"{front}/{seeded.ft.model_output_name}/resolve/main/config.json",
            headers={"Authorization": f"Bearer {seeded.token}"},
        )
        assert head.status_code == 200 and head.headers["content-length"] == "700"
        assert len(head.headers.get_list("x-repo-commit")) == 1
        found = run_client(
            front, seeded.token, tmp_path / "hf", "snapshots", [[seeded.ft.id, "main"]]
        )
    assert tree_bytes(Path(found[f"{seeded.ft.id}@main"])) == _sources(seeded)
