"""The upload client against a real server: resuming, refusals, unreachable servers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.publisher.conftest import Live
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.postgres import free_port
from tunevault.client.http import NetworkError
from tunevault.errors import DigestMismatch, Unauthenticated
from tunevault.publisher.uploader import PublishClient


def blob(tmp_path: Path, size: int) -> tuple[Path, str]:
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_resumes_an_interrupted_upload(live: Live, tmp_path: Path) -> None:
    path, sha = blob(tmp_path, 3 << 20)
    head = path.read_bytes()[: 1 << 20]
    with live.http() as c:  # an earlier upload that stopped after 1 MiB
        r = c.put(
            f"/v1/publish/blobs/{sha}",
            content=head,
            headers={"Upload-Length": str(3 << 20), "Upload-Offset": "0"},
        )
    assert r.status_code == 202 and r.json()["offset"] == 1 << 20
    with PublishClient(live.url, live.token) as client:
        assert client.remote_offset(sha) == 1 << 20
        client.upload_blob(path, sha, 3 << 20)
        assert client.bytes_sent == 2 << 20  # only the rest went up
        assert client.remote_offset(sha) is None
        client.upload_blob(path, sha, 3 << 20)  # committed: nothing to send
        assert client.bytes_sent == 2 << 20


def test_changed_file_is_refused(live: Live, tmp_path: Path) -> None:
    path, sha = blob(tmp_path, 1000)
    path.write_bytes(os.urandom(1000))  # changed after hashing
    with PublishClient(live.url, live.token) as client, pytest.raises(DigestMismatch):
        client.upload_blob(path, sha, 1000)
    with PublishClient(live.url, live.token) as client:
        assert client.remote_offset(sha) == 0  # and nothing was kept


def test_bad_key(live: Live) -> None:
    with PublishClient(live.url, "tv_nope") as client, pytest.raises(Unauthenticated):
        client.missing({"0" * 64: 1})


def test_unreachable_server_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = PublishClient(url, "k", retries=2, backoff_s=0.01)
    with client, pytest.raises(NetworkError, match="connection refused"):
        client.missing({"0" * 64: 1})
    # Each retry was announced as it happened.
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot reach {url}: connection refused; retrying in 0.0 s, {i}/2" for i in (1, 2)
    ]


@pytest.mark.parametrize("with_ids", [True, False])
def test_rows_with_ids_are_retried_after_lost_answers_and_stored_once(
    live: Live, with_ids: bool
) -> None:
    body = {"model": "m", "model_output_name": "o", "training_type": {"type": "Full"}}
    ft = live.post("/v1/publish/fine-tunes", body)
    rows = [{"type": "x"}, {"type": "y"}]
    if with_ids:
        rows = [{**row, "id": f"e:{i}"} for i, row in enumerate(rows)]
    with FaultProxy(live.url) as proxy:
        proxy.default = Fault(cut_after=1)  # every answer is lost after its first byte
        client = PublishClient(proxy.url, live.token, retries=2, backoff_s=0.01)
        with client, pytest.raises(NetworkError):
            client.add_events(ft["id"], rows)
        delivered = len(proxy.log)
    events = live.get(f"/v1/fine-tunes/{ft['id']}/events")["data"]
    if with_ids:
        assert delivered == 3  # retried, since the server skips rows it already has
        assert sorted(e["type"] for e in events) == ["X", "Y"]
    else:
        assert delivered == 1  # a retry could double the rows: not attempted
        assert sorted(e["type"] for e in events) == ["X", "Y"]


def test_a_fine_tune_whose_answer_was_lost_is_created_once(live: Live) -> None:
    name = f"o/{os.urandom(4).hex()}"
    body = {"model": "m", "model_output_name": name, "training_type": {"type": "Full"}}
    with FaultProxy(live.url) as proxy:
        proxy.default = Fault(cut_after=1)
        client = PublishClient(proxy.url, live.token, retries=2, backoff_s=0.01)
        with client, pytest.raises(NetworkError):
            client.create_fine_tune(body, "push:lost")
        assert len(proxy.log) == 3  # retried: the key makes it safe
    with PublishClient(live.url, live.token) as client:  # e.g. the rerun of a push
        ft = client.create_fine_tune(body, "push:lost")
    made = [f["id"] for f in live.get("/v1/fine-tunes")["data"] if f["model_output_name"] == name]
    assert made == [ft["id"]]
