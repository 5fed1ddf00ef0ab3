"""`serve --processes N`: one port served by several processes behind a master.

Connections spread across the processes; a killed process is replaced while the others
keep serving; SIGHUP replaces them all while downloads go on, dropping none; each
answered download has one audit row."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.seeding import seed_fine_tune
from tests.support.server import LiveServer, run_server
from tunevault.models import FineTune
from tunevault.server.prefork import ChildFailed, Master, bind
from tunevault.service.context import open_services
from tunevault.settings import Settings

Q = "/v1/finetune/download?checkpoint=model_output_path&ft_id="
SIZE = 8 << 20


def children(master: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{master}/task"):
        text = Path(f"/proc/{master}/task/{task}/children").read_text()
        found |= {int(pid) for pid in text.split()}
    return found


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, str, FineTune, Settings, str]]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(os.urandom(SIZE))
    settings = Settings(data_dir=tmp_path / "data")
    token, ft, archive = seed_fine_tune(settings, src)
    with run_server(settings.data_dir, args=("--processes", "2")) as server:
        # The port answers once the first process accepts; the master is done starting
        # (and a process dying is a replacement's business, not a failed start) only
        # when it says so.
        until(lambda: "with 2 processes" in _log(server), "the master's start")
        yield server, token, ft, settings, archive.sha256


def _log(server: LiveServer) -> str:
    return "".join(p.read_text() for p in server.data_dir.glob("server-*.log"))


def download(server: LiveServer, token: str, ft: FineTune) -> httpx.Response:
    # A new connection each time, as a fleet's replicas make them.
    return httpx.get(
        server.url + Q + ft.id, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def _peer_ports(pid: int, port: int) -> set[int]:
    """The client ports of the connections to `port` that process `pid` holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    peers = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and int(local.split(":")[1], 16) == port:
            peers.add(int(remote.split(":")[1], 16))
    return peers - {0}  # a listening socket's remote port reads 0


def test_connections_spread_across_the_processes(
    served: tuple[LiveServer, str, FineTune, Settings, str],
) -> None:
    server, token, ft, _, _ = served
    port = int(server.url.rsplit(":", 1)[1])
    # A burst of keep-alive connections, all queued before any is accepted, as wrk opens
    # them: with one shared listening socket, the first process to wake took them all.
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    request = f"GET /v1/fine-tunes/{ft.id} HTTP/1.1\r\nHost: x\r\n"
    request += f"Authorization: Bearer {token}\r\n\r\n"
    try:
        for conn in conns:
            conn.sendall(request.encode())
        for conn in conns:
            assert conn.recv(65536).startswith(b"HTTP/1.1 200 ")
        held = {pid: _peer_ports(pid, port) for pid in children(server.process.pid)}
    finally:
        for conn in conns:
            conn.close()
    assert len(held) == 2
    assert sum(len(ports) for ports in held.values()) == 20
    assert all(held.values()), held  # each process serves some of them


def test_a_killed_process_is_replaced_and_the_others_keep_serving(
    served: tuple[LiveServer, str, FineTune, Settings, str],
) -> None:
    server, token, ft, _, sha = served
    first = children(server.process.pid)
    assert len(first) == 2
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    for _ in range(20):  # the survivor answers every one, meanwhile and after
        r = download(server, token, ft)
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha
    until(lambda: len(children(server.process.pid) - {victim}) == 2, "a replacement")
    assert download(server, token, ft).status_code == 200


def test_sighup_restarts_every_process_without_dropping_a_download(
    served: tuple[LiveServer, str, FineTune, Settings, str],
) -> None:
    server, token, ft, settings, sha = served
    old = children(server.process.pid)
    answers: list[tuple[int, str]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                r = download(server, token, ft)
                answers.append((r.status_code, hashlib.sha256(r.content).hexdigest()))
            except httpx.HTTPError as e:
                failures.append(e)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    until(lambda: len(answers) >= 8, "downloads before the restart")
    server.process.send_signal(signal.SIGHUP)
    until(lambda: not children(server.process.pid) & old, "every old process gone")
    seen = len(answers)
    until(lambda: len(answers) >= seen + 8, "downloads after the restart")
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert set(answers) == {(200, sha)}
    assert len(children(server.process.pid)) == 2
    server.process.terminate()  # graceful: every process drains its audit queue
    assert server.process.wait(60) == 0
    with open_services(settings) as svc:
        rows = svc.store.list_downloads(ft.org_id, limit=10_000)
    assert len(rows) == len(answers) and {r.status for r in rows} == {200}


class _Numbered(Master):
    """Each child knows the order it was started in (TV_PREFORK_INDEX)."""

    spawned = 0

    def _spawn(self, slot: int) -> tuple[int, int]:
        os.environ["TV_PREFORK_INDEX"] = str(self.spawned)
        self.spawned += 1
        return super()._spawn(slot)


def _first_fails(_settings: Settings, _sock: socket.socket, ready_fd: int) -> None:
    """The first child dies before it is ready; the others say ready, then serve on."""
    if os.environ["TV_PREFORK_INDEX"] == "0":
        raise RuntimeError("a setting is wrong")
    os.write(ready_fd, b"1")
    time.sleep(600)


def test_a_failed_start_leaves_no_child_behind(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", processes=3)
    master = _Numbered(settings, bind("127.0.0.1", 0, 3), _first_fails, lambda: settings)
    before = children(os.getpid())  # the session's own servers (PostgreSQL, SeaweedFS, ...)
    try:
        with pytest.raises(ChildFailed):
            master.start()
    finally:
        os.environ.pop("TV_PREFORK_INDEX", None)
    assert children(os.getpid()) - before == set()  # the two that were ready stopped too


def test_a_restart_with_another_process_count_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", processes=2)
    grown = Settings(data_dir=tmp_path / "data", processes=3)
    master = Master(settings, bind("127.0.0.1", 0, 2), _first_fails, lambda: grown)
    before = children(os.getpid())
    master.restart()  # the sockets are the master's: no child starts, nothing changes
    assert master.settings is settings and master.current == {}
    assert children(os.getpid()) - before == set()
