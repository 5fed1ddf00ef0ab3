"""The download engine against a live tunevault through a fault-injecting proxy."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from tests.client.conftest import FAST, Live, MiB, leftovers
from tests.client.seeding import add_fine_tune, archive_bytes, rebuild_archive
from tests.support.disk import fill
from tests.support.faultproxy import Fault, FaultProxy
from tunevault.client import Client, download, splice
from tunevault.client.fetch import RESPOND_ASYNC, RetryPolicy
from tunevault.client.http import NetworkError
from tunevault.client.state import PartFile
from tunevault.errors import (
    ArchiveNotReady,
    FineTuneNotFound,
    InsufficientStorage,
    IntegrityError,
    Unauthenticated,
)

NO_RETRY = RetryPolicy(attempts=0, backoff=0.01)


@pytest.fixture(autouse=True, params=["splice", "buffers"])
def receive_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs both ways bytes reach the .part: spliced in the kernel (plain HTTP
    on Linux), and read into buffers (TLS, or elsewhere), which the hasher gets directly."""
    if request.param == "buffers":
        monkeypatch.setattr(splice, "SUPPORTED", False)


def test_plain_download_is_named_by_the_server_and_verified(
    live: Live, client: Client, tmp_path: Path
) -> None:
    result = download(client, live.ft, checkpoint="model_output_path", output=tmp_path)
    assert result.filename == live.filename
    assert Path(result.path) == tmp_path / live.filename
    assert (tmp_path / live.filename).read_bytes() == live.data
    assert result.verified and result.sha256 == live.sha256
    assert result.transferred == len(live.data) and result.resumed_bytes == 0
    assert leftovers(tmp_path) == []


def test_output_file_path_and_step_suffix(live: Live, client: Client, tmp_path: Path) -> None:
    target = tmp_path / "sub" / "mine.tar.zst"
    result = download(client, live.ft, step=100, output=target)
    assert Path(result.path) == target and target.read_bytes() == live.data
    assert leftovers(target.parent) == []


def test_cuts_at_random_offsets_resume_from_the_exact_byte(
    live: Live, client: Client, proxy: FaultProxy, tmp_path: Path
) -> None:
    rng = random.Random(7)
    # Inside Together's first 10 MiB step, a non-aligned one, and one late in the file.
    cuts = [rng.randrange(1, 10 * MiB), rng.randrange(10 * MiB, 15 * MiB) | 1, 3 * MiB + 17]
    proxy.push(*(Fault(cut_after=c) for c in cuts))
    result = download(client, live.ft, output=tmp_path, policy=FAST)
    assert (tmp_path / live.filename).read_bytes() == live.data
    # Every byte crossed the wire once: resumes start where the last cut left off.
    assert result.transferred == len(live.data)
    asked = [ex.headers.get("range") for ex in proxy.downloads()]
    starts = [0, cuts[0], cuts[0] + cuts[1], cuts[0] + cuts[1] + cuts[2]]
    assert asked == [None] + [f"bytes={s}-{len(live.data) - 1}" for s in starts[1:]]
    assert all(ex.headers.get("if-range") == f'"{live.sha256}"' for ex in proxy.downloads()[1:])
    assert leftovers(tmp_path) == []


def test_several_connections_with_cuts(
    live: Live, client: Client, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.push(Fault(), Fault(cut_after=MiB + 5), Fault(cut_after=123_457), Fault())
    result = download(client, live.ft, output=tmp_path, connections=4, policy=FAST)
    assert (tmp_path / live.filename).read_bytes() == live.data
    assert result.connections == 4 and result.transferred >= len(live.data)
    ranged = [ex for ex in proxy.downloads() if ex.status == 206]
    assert len(ranged) >= 5  # the archive really went over several ranged requests
    assert leftovers(tmp_path) == []


def test_server_that_ignores_range_makes_a_clean_restart(
    live: Live, client: Client, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.default = Fault(strip_range=True)
    proxy.push(Fault(cut_after=5 * MiB, strip_range=True))
    result = download(client, live.ft, output=tmp_path, connections=3, policy=FAST)
    assert (tmp_path / live.filename).read_bytes() == live.data
    assert result.restarts == 1 and result.connections == 1
    assert leftovers(tmp_path) == []


def test_corrupted_byte_fails_loudly_and_leaves_nothing(
    live: Live, client: Client, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.push(Fault(corrupt_at=len(live.data) // 2))
    with pytest.raises(IntegrityError, match="sha256"):
        download(client, live.ft, output=tmp_path, policy=FAST)
    assert list(tmp_path.iterdir()) == []


def test_corruption_after_a_resume_is_caught_too(
    live: Live, client: Client, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.default = Fault(corrupt_at=20 * MiB)  # whichever ranged request carries it
    proxy.push(Fault(cut_after=2 * MiB))
    with pytest.raises(IntegrityError):
        download(client, live.ft, output=tmp_path, connections=2, policy=FAST)
    assert list(tmp_path.iterdir()) == []


def test_archive_replaced_between_runs_starts_over(
    live: Live, proxy: FaultProxy, tmp_path: Path
) -> None:
    own = add_fine_tune(live.seeded.settings, live.seeded.token, {"w.bin": 3 * MiB}, name="x/rep")
    client = Client(proxy.url, own.token)
    out = tmp_path / "out"
    out.mkdir()
    proxy.push(Fault(cut_after=MiB + 99))
    with pytest.raises(NetworkError):
        download(client, own.ft.id, output=out, policy=NO_RETRY)
    assert sorted(p.suffix for p in out.iterdir()) == [".part", ".tv"]
    new = rebuild_archive(own, level=5)
    assert new.sha256 != own.archive.sha256
    result = download(client, own.ft.id, output=out, policy=FAST)
    assert result.sha256 == new.sha256 and result.resumed_bytes == 0
    assert Path(result.path).read_bytes() == archive_bytes(own, new)
    second = proxy.downloads()[-1]
    assert second.headers["if-range"] == f'"{own.archive.sha256}"' and second.status == 200
    assert leftovers(out) == []


def test_multi_connection_state_survives_a_failed_run(
    live: Live, client: Client, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.push(Fault(), Fault(cut_after=MiB // 2), Fault(), Fault())
    with pytest.raises(NetworkError):
        download(client, live.ft, output=tmp_path, connections=4, policy=NO_RETRY)
    part = PartFile.load(tmp_path / live.filename)
    assert part is not None
    present = part.spans.total()
    part.close()
    result = download(client, live.ft, output=tmp_path, connections=4, policy=FAST)
    assert (tmp_path / live.filename).read_bytes() == live.data
    # Only the gaps were fetched again.
    assert result.resumed_bytes == present > 0
    assert result.transferred == len(live.data) - present
    assert leftovers(tmp_path) == []


def recorded(final: Path) -> int:
    """How many bytes the sidecar of `final`'s .part says are written."""
    part = PartFile.load(final)
    if part is None:
        return 0
    part.close()
    return part.spans.total()


def test_a_full_disk_fails_at_once_and_keeps_the_part(
    live: Live, client: Client, proxy: FaultProxy, small_disk: Path
) -> None:
    out = small_disk / "out"
    out.mkdir()
    whole = 3 * MiB  # whole chunks on either path; the 17 bytes after it wait in a part-chunk
    proxy.push(Fault(stall_after=whole + 17))
    failures: list[BaseException] = []

    def run() -> None:
        try:
            download(client, live.ft, output=out, policy=FAST)
        except BaseException as e:
            failures.append(e)

    # A thread, so that a download hung on the full disk fails the test instead of hanging it.
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert proxy.stalled.wait(30)
        # Once the whole chunks before the stall are written, the disk fills up.
        deadline = time.monotonic() + 30
        while recorded(out / live.filename) < whole:
            assert time.monotonic() < deadline, "the bytes before the stall were never written"
            time.sleep(0.01)
        fill(small_disk, 0)
    finally:
        proxy.release()
    thread.join(30)
    assert not thread.is_alive(), "the download hangs on a full disk"
    # Not retried as a network failure: the disk is named, and the .part kept for a rerun.
    (err,) = failures
    assert isinstance(err, InsufficientStorage), repr(err)
    assert "the download disk is full" in err.message
    assert leftovers(out) == [live.filename + ".part", live.filename + ".part.tv"]


def test_server_errors_become_their_classes(live: Live, proxy: FaultProxy, tmp_path: Path) -> None:
    with pytest.raises(FineTuneNotFound):
        download(Client(proxy.url, live.seeded.token), "ft-00000000-0000", output=tmp_path)
    with pytest.raises(Unauthenticated):
        download(Client(proxy.url, "tv_bad"), live.ft, output=tmp_path)
    with pytest.raises(ArchiveNotReady):
        policy = RetryPolicy(not_ready_timeout=0)
        download(
            Client(proxy.url, live.seeded.token), live.pending_ft, output=tmp_path, policy=policy
        )
    assert list(tmp_path.iterdir()) == []


def test_a_head_of_an_archive_being_built_is_archive_not_ready(live: Live) -> None:
    """A HEAD's 409 has no envelope (`push --wait` asks with HEADs): the build headers
    make it the same ArchiveNotReady a GET gets, with the wait it announced."""
    transport = Client(live.url, live.seeded.token).transport
    query = {"ft_id": live.pending_ft, "checkpoint": "model_output_path"}
    resp = transport.open("HEAD", transport.url("/v1/finetune/download", query), RESPOND_ASYNC)
    assert resp.status == 409
    with pytest.raises(ArchiveNotReady, match=r"being built \((queued|building)") as raised:
        resp.raise_for_error()
    assert int(raised.value.headers["Retry-After"]) >= 1
    assert raised.value.headers["Tunevault-Build-State"] in ("queued", "building")
    assert float(raised.value.headers["Tunevault-Build-Eta"]) >= 1


def test_unreachable_server_is_a_network_error(tmp_path: Path) -> None:
    client = Client("http://127.0.0.1:9", "k")  # discard port: nothing listens
    with pytest.raises(NetworkError):
        download(client, "ft-1", output=tmp_path, policy=FAST)


def test_output_with_trailing_slash_is_a_new_directory(
    live: Live, client: Client, tmp_path: Path
) -> None:
    result = download(client, live.ft, output=str(tmp_path / "new") + "/")
    assert Path(result.path) == tmp_path / "new" / live.filename
