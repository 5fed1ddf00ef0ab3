"""Redirects to another origin, the typed API calls, and where the client finds its server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.client.conftest import FAST, Live, MiB
from tests.client.origins import blob_host, redirector
from tests.client.seeding import add_fine_tune
from tests.support.faultproxy import Fault, FaultProxy
from tunevault.client import Client, ClientConfig, download
from tunevault.client.config import TOGETHER_URL
from tunevault.client.extract import download_extract
from tunevault.client.http import NetworkError
from tunevault.client.retry import Backoff
from tunevault.errors import Conflict, FineTuneNotFound
from tunevault.models import MetricRow
from tunevault.service.context import open_services


def test_redirect_to_another_origin_drops_the_key_and_keeps_range(
    live: Live, tmp_path: Path
) -> None:
    with (
        blob_host(live.data, cut_first_after=3 * MiB + 7) as blobs,
        redirector(blobs.url + "/bucket/archive?X-Sig=abc") as api,
    ):
        result = download(Client(api.url, "secret-key"), live.ft, output=tmp_path, policy=FAST)
    # The blob host's hostile file name is reduced to a plain name in the output dir.
    assert Path(result.path) == tmp_path / "evil_name.tar.zst"
    assert Path(result.path).read_bytes() == live.data and result.verified
    assert [h.get("authorization") for h in api.seen] == ["Bearer secret-key"] * 2
    assert [h.get("authorization") for h in blobs.seen] == [None, None]
    assert blobs.seen[1]["range"] == f"bytes={3 * MiB + 7}-{len(live.data) - 1}"
    assert blobs.seen[1]["if-range"] == f'"{live.sha256}"'


def test_without_an_etag_one_connection_is_used_and_reported(live: Live, tmp_path: Path) -> None:
    with blob_host(live.data, etag=False) as blobs, redirector(blobs.url) as api:
        result = download(
            Client(api.url, "k"), live.ft, output=tmp_path, connections=4, policy=FAST
        )
    assert Path(result.path).read_bytes() == live.data and result.verified
    assert result.connections == 1
    assert [h.get("range") for h in blobs.seen] == [None]  # one plain GET, no pieces


def test_extract_through_a_redirect(live: Live, tmp_path: Path) -> None:
    with blob_host(live.data, cut_first_after=MiB) as blobs, redirector(blobs.url) as api:
        result = download_extract(Client(api.url, "k"), live.ft, tmp_path / "m", policy=FAST)
    assert result.sha256 == live.sha256 and (tmp_path / "m" / "config.json").exists()
    assert all("authorization" not in h for h in blobs.seen)


def test_read_routes(live: Live) -> None:
    client = Client(live.url, live.seeded.token)
    assert live.ft in [ft.id for ft in client.list_fine_tunes()]
    ft = client.get_fine_tune(live.ft)
    assert (ft.model_output_name, ft.training_type, ft.status) == (
        "acme/llama-ft",
        "Full",
        "completed",
    )
    [ckpt] = client.list_checkpoints(live.ft)
    assert (ckpt.step, ckpt.checkpoint_type, ckpt.checkpoint) == (100, "Final", "model")
    assert client.whoami()["organization"]["name"] == "acme"
    with pytest.raises(Conflict):
        client.cancel_fine_tune(live.ft)  # completed jobs cannot be cancelled


@pytest.mark.parametrize(("method", "tries"), [("GET", 3), ("POST", 1)])
def test_an_answer_cut_short_is_retried_only_when_safe(live: Live, method: str, tries: int) -> None:
    """A JSON answer cut after its first byte is a network failure, not invalid JSON: an
    idempotent call is sent again, a cancel (POST) is not, since it may have happened."""
    with FaultProxy(live.url) as proxy:
        proxy.default = Fault(cut_after=1)
        client = Client(proxy.url, live.seeded.token, backoff=Backoff(attempts=2, first=0.01))
        with pytest.raises(NetworkError, match="cut"):
            if method == "GET":
                client.get_fine_tune(live.ft)
            else:
                client.cancel_fine_tune(live.ft)
        assert [e.status for e in proxy.log] == [200 if method == "GET" else 409] * tries


def test_events_and_metrics(live: Live) -> None:
    own = add_fine_tune(live.seeded.settings, live.seeded.token, {"w": 10}, name="x/log")
    with open_services(live.seeded.settings) as svc:
        svc.store.add_event(own.ft.id, "JOB_START", "training started")
        svc.store.add_event(own.ft.id, "CHECKPOINT_SAVE", "saved", level="warning", step=20)
        svc.store.add_metrics(
            own.ft.id, [MetricRow(step, {"train/loss": 1 / step}) for step in (10, 20, 30)]
        )
    client = Client(live.url, live.seeded.token)
    events = client.list_events(own.ft.id)
    assert [(e["type"], e["message"], e["level"], e.get("step")) for e in events] == [
        ("JOB_START", "training started", "info", None),
        ("CHECKPOINT_SAVE", "saved", "warning", 20),
    ]
    assert client.metrics(own.ft.id) == [
        {"train/loss": 1 / step, "train/global_step": step} for step in (10, 20, 30)
    ]
    assert client.metrics(own.ft.id, step_from=15, step_to=20) == [
        {"train/loss": 1 / 20, "train/global_step": 20}
    ]


def test_delete(live: Live) -> None:
    own = add_fine_tune(live.seeded.settings, live.seeded.token, {"w": 10}, name="x/del")
    client = Client(live.url, live.seeded.token)
    client.delete_fine_tune(own.ft.id)
    with pytest.raises(FineTuneNotFound):
        client.get_fine_tune(own.ft.id)


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_together_variables_with_or_without_v1(live: Live, suffix: str) -> None:
    env = {"TOGETHER_BASE_URL": live.url + suffix, "TOGETHER_API_KEY": live.seeded.token}
    config = ClientConfig.resolve(env=env)
    assert config.base_url == live.url
    assert live.ft in [ft.id for ft in Client(config=config).list_fine_tunes()]


def test_configuration_precedence() -> None:
    env = {
        "TUNEVAULT_URL": "http://tv:1",
        "TUNEVAULT_API_KEY": "a",
        "TOGETHER_BASE_URL": "http://tg:2/v1",
        "TOGETHER_API_KEY": "b",
    }
    assert ClientConfig.resolve(env=env) == ClientConfig("http://tv:1", "a")
    assert ClientConfig.resolve("http://flag:3/v1", "c", env=env) == ClientConfig(
        "http://flag:3", "c"
    )
    assert ClientConfig.resolve(env={"TOGETHER_API_KEY": "b"}).base_url == TOGETHER_URL
    assert ClientConfig.resolve(env={}).base_url == "http://127.0.0.1:8000"
