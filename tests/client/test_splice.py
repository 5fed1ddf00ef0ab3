"""The kernel path of a download body: socket -> pipe -> .part with splice(2).

Direct to the server (keep-alive answer) and through the proxy (`Connection: close`,
where http.client lets go of the connection's socket) against a live tunevault.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest

from tests.client.conftest import Live, MiB
from tests.support.faultproxy import Fault, FaultProxy
from tunevault.client import Client, splice
from tunevault.client.http import Response

ONE = splice.Writing.for_connections(1)

pytestmark = pytest.mark.skipif(not splice.SUPPORTED, reason="splice(2) is Linux-only")
OFFSET = 4099  # not page-aligned: the body must land exactly where it is told


def _open(client: Client, live: Live) -> Response:
    transport = client.transport
    resp = transport.open(
        "GET",
        transport.url(
            "/v1/finetune/download", {"ft_id": live.ft, "checkpoint": "model_output_path"}
        ),
    )
    assert resp.status == 200
    return resp


@pytest.mark.parametrize(
    "writing",
    [
        splice.Writing.for_connections(1),
        splice.Writing.for_connections(4),
        splice.Writing(4097, contextlib.nullcontext()),
        splice.Writing(1 << 30, threading.Lock()),
    ],
    ids=["one", "several", "odd-step", "whole"],
)
@pytest.mark.parametrize("via", ["direct", "proxy"])
def test_the_body_lands_at_its_offset_read_ahead_included(
    live: Live, proxy: FaultProxy, via: str, writing: splice.Writing, tmp_path: Path
) -> None:
    client = Client(live.url if via == "direct" else proxy.url, live.seeded.token)
    resp = _open(client, live)
    assert resp.can_splice()
    fd = os.open(tmp_path / "x", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        pos, sizes = OFFSET, set()
        while True:
            n, err = resp.splice_into(fd, pos, 300_001, writing)
            assert err is None
            if n == 0:
                break
            sizes.add(n)
            pos += n
        assert max(sizes) == 300_001  # short socket reads are filled up to the limit
    finally:
        os.close(fd)
        resp.close()
    assert (tmp_path / "x").read_bytes()[OFFSET:] == live.data


def test_a_stalled_server_times_out(live: Live, proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.push(Fault(stall_after=MiB + 1))
    resp = _open(Client(proxy.url, live.seeded.token, timeout=0.5), live)
    fd = os.open(tmp_path / "x", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        n, err = resp.splice_into(fd, 0, 4 * MiB, ONE)
        assert isinstance(err, TimeoutError)
        assert n == MiB + 1  # what arrived before the stall is kept, and reported
        assert (tmp_path / "x").read_bytes() == live.data[:n]
    finally:
        proxy.release()
        os.close(fd)
        resp.close()


def test_shutdown_wakes_a_blocked_splice(live: Live, proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.push(Fault(stall_after=MiB))
    resp = _open(Client(proxy.url, live.seeded.token), live)
    fd = os.open(tmp_path / "x", os.O_RDWR | os.O_CREAT, 0o600)
    outcome: list[tuple[int, BaseException | None]] = []

    def read() -> None:
        outcome.append(resp.splice_into(fd, 0, 4 * MiB, ONE))

    reader = threading.Thread(target=read)
    try:
        reader.start()
        assert proxy.stalled.wait(30)
        resp.shutdown()
        reader.join(30)
        assert not reader.is_alive()  # the 60 s read timeout did not have to pass
        # Bytes still queued may be dropped by the shutdown; what did land is reported.
        ((n, _),) = outcome
        assert n <= MiB
        assert (tmp_path / "x").read_bytes()[:n] == live.data[:n]
    finally:
        proxy.release()
        os.close(fd)
        resp.close()
