"""An evicted archive seen by each client: the together SDK and CLI get the bytes in one
request (held while the rebuild runs) or, past the hold, the 409 with Retry-After; and a
worker killed with SIGKILL mid-rebuild leaves nothing visible: the next worker rebuilds
it, bit for bit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import together

from tests.cache.conftest import RESPOND_ASYNC, Store, sha
from tests.cache.test_eviction import _age_all, _query
from tests.reliability.helpers import wait_for
from tests.support.server import run_server
from tests.support.together import TOGETHER_CLI, together_download
from tunevault.models import FineTune
from tunevault.service.cache import enforce_budget
from tunevault.service.worker import Worker


@pytest.mark.skipif(shutil.which(TOGETHER_CLI) is None, reason="together CLI not installed")
def test_together_sdk_and_cli_get_an_evicted_archive(store: Store, tmp_path: Path) -> None:
    ft, archive = store.fine_tune("together", tmp_path, size=4 << 20)
    _age_all(store)
    evict = store.with_settings(derived_budget_bytes=1)
    env = {**store.env, "TUNEVAULT_BUILD_WORKERS": "1"}
    with run_server(store.server.data_dir / "workers", env=env) as server:
        assert enforce_budget(evict)
        sdk = together.Together(api_key=store.token, base_url=server.url, max_retries=0)
        body = sdk.fine_tuning.content(ft_id=ft.id, checkpoint="model_output_path").read()
        assert sha(body) == archive.sha256
        # The download's audit (which dates it, for the LRU order) is written just after
        # the answer: let it land before making everything old again.
        wait_for(lambda: _audited(store, ft), "the download's audit row")
        _age_all(store)
        assert enforce_budget(evict)
        saved = together_download(server.url, store.token, tmp_path / "cli", ft.id)
        assert sha(saved.read_bytes()) == archive.sha256


def _audited(store: Store, ft: FineTune) -> bool:
    return any(r.ft_id == ft.id for r in store.svc.store.list_downloads(ft.org_id))


def test_past_the_hold_other_clients_get_409_with_retry_after(store: Store, tmp_path: Path) -> None:
    ft, _ = store.fine_tune("nobody-builds", tmp_path)
    _age_all(store)
    assert enforce_budget(store.with_settings(derived_budget_bytes=1))
    env = {**store.env, "TUNEVAULT_BUILD_WORKERS": "0", "TUNEVAULT_REBUILD_HOLD_SECONDS": "2"}
    with run_server(store.server.data_dir / "hold", env=env) as server:
        headers = {"Authorization": f"Bearer {store.token}"}
        r = httpx.get(server.url + _query(ft), headers=headers, timeout=60)
    assert r.status_code == 409 and r.headers["Tunevault-Build-Reason"] == "evicted"
    assert int(r.headers["Retry-After"]) >= 1
    assert [j.state for j in store.svc.store.jobs_for_checkpoint(_checkpoint_id(store, ft))] == [
        "queued"
    ]


def _checkpoint_id(store: Store, ft: FineTune) -> int:
    (ckpt,) = store.svc.store.list_checkpoints(ft.id)
    return ckpt.id


def test_kill_9_during_a_rebuild_leaves_nothing_and_the_next_rebuilds(
    store: Store, tmp_path: Path
) -> None:
    slow = store.with_settings(zstd_level=19)  # seconds per build: time to kill it
    ft, archive = store.fine_tune("slow", tmp_path, size=12 << 20, svc=slow)
    _age_all(store)
    assert enforce_budget(store.with_settings(derived_budget_bytes=1))
    jobs = store.svc.store.jobs_for_checkpoint
    with store.client(**RESPOND_ASYNC) as c:
        assert c.get(_query(ft)).status_code == 409
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tunevault",
                "worker",
                "--data-dir",
                str(slow.settings.data_dir),
            ],
            env={
                **os.environ,
                **store.env,
                "TUNEVAULT_ZSTD_LEVEL": "19",
                "TUNEVAULT_JOB_LEASE_SECONDS": "2",
                "TUNEVAULT_JOB_POLL_SECONDS": "0.05",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: jobs(archive.checkpoint_id)[0].state == "running", "the rebuild")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert store.svc.store.get_archive(archive.checkpoint_id) is None
        assert store.svc.storage.stat(archive.storage_key) is None
        assert list(store.svc.storage.list("archives/")) == []
        r = c.get(_query(ft))
        assert r.status_code == 409 and r.headers["Tunevault-Build-Reason"] == "evicted"
        # Once the dead worker's lease expires the next worker takes the rebuild over.
        wait_for(Worker(slow).run_once, "the lease to expire", tries=2000)
        r = c.get(_query(ft))
    assert r.status_code == 200 and sha(r.content) == archive.sha256
