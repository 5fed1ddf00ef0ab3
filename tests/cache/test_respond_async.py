"""Who waits for an evicted archive, and what asking costs: a request with `Prefer:
respond-async` (tunevault's client sends it) gets the 409 with Retry-After at once, any
other is held and served, whatever its User-Agent; the rebuild is queued by one write,
however often it is asked for or polled, and a failed rebuild is not queued again."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cache.conftest import RESPOND_ASYNC, Store, sha
from tests.cache.test_eviction import _age_all, _download, _query
from tests.support.server import LiveServer, run_server
from tests.test_operations import metric
from tunevault.client.api import Client
from tunevault.client.fetch import Fetcher, RetryPolicy
from tunevault.client.target import DownloadRequest
from tunevault.errors import ArchiveNotReady
from tunevault.metadata import tables as t
from tunevault.models import Archive, FineTune, Scope
from tunevault.service.cache import enforce_budget

WRITES = ("insert", "update", "delete")


def _evicted(store: Store, tmp_path: Path, name: str) -> tuple[FineTune, Archive]:
    ft, archive = store.fine_tune(name, tmp_path)
    _age_all(store)
    assert [e.ft_id for e in enforce_budget(store.with_settings(derived_budget_bytes=1))] == [ft.id]
    return ft, archive


def _writes(server: LiveServer, operator: str) -> int:
    """SQL writes the server process has sent so far (its /metrics)."""
    r = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {operator}"})
    assert r.status_code == 200, r.text
    return sum(
        int(metric(r.text, f'tunevault_database_seconds_count{{statement="{verb}"}}'))
        for verb in WRITES
    )


def _operator(store: Store) -> str:
    ops = store.svc.store.create_org("operators")
    return store.svc.store.create_key(ops.id, "prometheus", [Scope.OPERATOR])[1]


def _jobs(store: Store, archive: Archive) -> list[str]:
    return [j.state for j in store.svc.store.jobs_for_checkpoint(archive.checkpoint_id)]


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_without_the_preference_a_request_is_held_and_served_whatever_its_agent(
    store: Store, tmp_path: Path
) -> None:
    ft, archive = _evicted(store, tmp_path, "held")
    env = {**store.env, "TUNEVAULT_BUILD_WORKERS": "1"}
    with run_server(store.server.data_dir / "builds", env=env) as server:
        for agent in ("tunevault-client/0.1", "curl/8.5.0"):
            _age_all(store)
            enforce_budget(store.with_settings(derived_budget_bytes=1))
            r = httpx.get(
                server.url + _query(ft),
                headers={"Authorization": f"Bearer {store.token}", "User-Agent": agent},
                timeout=60,
            )
            assert r.status_code == 200 and sha(r.content) == archive.sha256, agent
            assert "Preference-Applied" not in r.headers


@pytest.mark.parametrize("store", ["local"], indirect=True)
@pytest.mark.parametrize("prefer", ["respond-async", "wait=30, Respond-Async", "handling=lenient"])
def test_with_the_preference_any_agent_gets_the_409_at_once(
    store: Store, tmp_path: Path, prefer: str
) -> None:
    ft, archive = _evicted(store, tmp_path, "async")
    # No worker runs: a held request would wait out rebuild_hold_seconds (40 s) past the
    # client's timeout. Preferences in two headers count as one list.
    headers = [("Prefer", prefer), ("User-Agent", "curl/8.5.0")]
    if prefer == "handling=lenient":
        headers.append(("Prefer", "respond-async"))
    with store.client() as c:
        r = c.get(_query(ft), headers=httpx.Headers(headers), timeout=15)
    assert r.status_code == 409 and r.json()["error"]["code"] == "archive_not_ready"
    assert r.headers["Tunevault-Build-Reason"] == "evicted"
    assert r.headers["Preference-Applied"] == "respond-async"
    assert 1 <= int(r.headers["Retry-After"]) <= 10
    assert _jobs(store, archive) == ["queued"]


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_tunevault_client_asks_for_the_409(store: Store, tmp_path: Path) -> None:
    """Held, its request would outlast the client's 10 s timeout: a network error."""
    ft, _ = _evicted(store, tmp_path, "ours")
    client = Client(store.server.url, store.token, timeout=10)
    request = DownloadRequest(ft.id, None, "model_output_path")
    fetcher = Fetcher(client, request, RetryPolicy(attempts=0, not_ready_timeout=0))
    with pytest.raises(ArchiveNotReady, match="evicted from the cache, rebuilding"):
        fetcher.get({})


def test_polls_of_an_evicted_archive_queue_its_rebuild_once(store: Store, tmp_path: Path) -> None:
    ft, archive = _evicted(store, tmp_path, "polled")
    operator = _operator(store)
    env = {**store.env, "TUNEVAULT_REBUILD_HOLD_SECONDS": "2"}
    with run_server(store.server.data_dir / "polls", env=env) as server:
        headers = {"Authorization": f"Bearer {store.token}"}
        before = _writes(server, operator)
        # Held for 2 s, looking at the queue every half second; then the 409.
        r = httpx.get(server.url + _query(ft), headers=headers, timeout=60)
        assert r.status_code == 409 and "Preference-Applied" not in r.headers
        held = _writes(server, operator)
        for _ in range(8):
            r = httpx.get(server.url + _query(ft), headers={**headers, **RESPOND_ASYNC})
            assert r.status_code == 409 and r.headers["Tunevault-Build-Reason"] == "evicted"
        polled = _writes(server, operator)
    assert (held - before, polled - held) == (1, 0)  # the requeue of the finished build
    assert _jobs(store, archive) == ["queued"]
    assert store.build_all() == 1
    with store.client() as c:
        assert sha(c.get(_query(ft)).content) == archive.sha256


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_a_rebuild_is_queued_again_after_each_eviction_but_not_after_a_failure(
    store: Store, tmp_path: Path
) -> None:
    ft, archive = _evicted(store, tmp_path, "again")
    with store.client(**RESPOND_ASYNC) as c:
        assert c.get(_query(ft)).status_code == 409
        assert store.build_all() == 1
        _download(store, ft, archive)  # and its audit's touch landed: aged next
        _age_all(store)
        assert enforce_budget(store.with_settings(derived_budget_bytes=1))
        assert c.get(_query(ft)).status_code == 409 and _jobs(store, archive) == ["queued"]
        with store.svc.store.engine.begin() as conn:  # as if its inputs had changed since
            conn.execute(t.evicted_archives.update().values(sha256="0" * 64))
        assert store.build_all() == 1 and _jobs(store, archive) == ["failed"]
        for _ in range(3):  # the failure is the answer; nothing queues the same rebuild
            r = c.get(_query(ft))
            assert r.status_code == 500 and r.json()["error"]["code"] == "rebuild_mismatch"
    assert _jobs(store, archive) == ["failed"] and store.build_all() == 0
