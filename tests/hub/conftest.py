"""The demo store behind a live server, reached by the real Hub clients in child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tunevault
from tests.client.seeding import Seeded, seed_store
from tests.conftest import Demo
from tests.support.server import LiveServer, run_server
from tests.test_archive import contents
from tunevault.archive.write import SUMS_NAME
from tunevault.layout import blob_key
from tunevault.models import DownloadRecord, FineTune, Kind
from tunevault.service.context import open_services

ROOT = Path(__file__).parents[2]
SRC = Path(tunevault.__file__).parents[1]
HF_BIN = Path(sys.executable).parent / "hf"
BIG_SIZE = 13 << 20


def client_env(endpoint: str, token: str | None, home: Path) -> dict[str, str]:
    """This process's environment with the Hub client pointed at `endpoint`, a cache of
    its own, and nothing inherited that could send it offline or elsewhere."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "TRANSFORMERS"))
    }
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(SRC)]),
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run_client(endpoint: str, token: str | None, home: Path, command: str, *args: Any) -> Any:
    """`tests.hub.clients` COMMAND in a child process; its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.hub.clients", command, json.dumps(args)],
        env=client_env(endpoint, token, home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Hub:
    demo: Demo
    home: Path

    def run(self, command: str, *args: Any, token: str | None = "", endpoint: str = "") -> Any:
        return run_client(endpoint or self.demo.url, self._token(token), self.home, command, *args)

    def hf(self, *args: str, token: str | None = "") -> subprocess.CompletedProcess[str]:
        """The `hf` command line, against the demo server."""
        env = client_env(self.demo.url, self._token(token), self.home)
        return subprocess.run(
            [str(HF_BIN), *args], env=env, capture_output=True, text=True, timeout=600, check=False
        )

    def _token(self, token: str | None) -> str | None:
        return self.demo.token if token == "" else token

    def archive_files(self, ft: FineTune, step: int, kind: Kind) -> dict[str, bytes]:
        """The checkpoint's files as its archive holds them (minus tunevault's SHA256SUMS)."""
        members = contents(self.demo.archive_bytes(ft, step, kind))
        return {path: data for path, data in members.items() if path != SUMS_NAME}

    def base_files(self, name: str) -> dict[str, bytes]:
        with open_services(self.demo.settings) as svc:
            org = svc.store.get_org_by_name("demo")
            assert org is not None
            base = svc.store.get_base_model(org.id, name)
            assert base is not None
            return {
                f.path: b"".join(svc.storage.iter_range(blob_key(f.sha256))) for f in base.files
            }


@pytest.fixture
def hub(demo: Demo, tmp_path: Path) -> Hub:
    return Hub(demo, tmp_path / "hf-home")


@dataclass(frozen=True)
class Big:
    server: LiveServer
    seeded: Seeded


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Big]:
    """A file past huggingface_hub's 10 MiB read chunk: a cut after the first chunk is
    resumed from there (a cut inside it starts over)."""
    seeded = seed_store(tmp_path_factory.mktemp("hub-big"), {"model.safetensors": BIG_SIZE})
    with run_server(seeded.data_dir) as server:
        yield Big(server, seeded)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root (a snapshot's symlinks followed), by relative path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(root).parts
    }


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def audited(demo: Demo, match: Callable[[DownloadRecord], bool]) -> list[DownloadRecord]:
    """The demo organization's audit records that match, once the server wrote them (the
    audit is written in batches, off the request path)."""
    deadline = time.monotonic() + 30
    with open_services(demo.settings) as svc:
        org = svc.store.get_org_by_name("demo")
        assert org is not None
        while True:
            found = [r for r in svc.store.list_downloads(org.id, limit=1000) if match(r)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)
