"""The cache's LRU order is dated by archive downloads only: the audit writer's batch for
an archive download updates its archive's `last_download_at`; a Hub file's download (a
blob, which no archive row names) sends no UPDATE at all."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cache.conftest import Store, sha
from tests.cache.test_eviction import _query
from tests.cache.test_respond_async import _operator
from tests.reliability.helpers import wait_for
from tests.test_operations import metric
from tunevault.models import FineTune

UPDATES = 'tunevault_database_seconds_count{statement="update"}'
INSERTS = 'tunevault_database_seconds_count{statement="insert"}'


def _counts(store: Store, operator: str) -> tuple[float, float]:
    r = httpx.get(store.server.url + "/metrics", headers={"Authorization": f"Bearer {operator}"})
    assert r.status_code == 200, r.text
    return metric(r.text, UPDATES), metric(r.text, INSERTS)


def _audited(store: Store, ft: FineTune, kind: str) -> int:
    return sum(r.kind == kind for r in store.svc.store.list_downloads(store.org_id, limit=1000))


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_a_hub_file_download_dates_no_archive(store: Store, tmp_path: Path) -> None:
    ft, archive = store.fine_tune("hub", tmp_path)
    operator = _operator(store)
    (blob,) = store.svc.store.get_checkpoint(archive.checkpoint_id).files  # type: ignore[union-attr]
    with store.client() as c:
        before = _counts(store, operator)
        r = c.get(f"/{ft.id}/resolve/main/w.bin")
        assert r.status_code == 200 and sha(r.content) == blob.sha256
        wait_for(lambda: _audited(store, ft, "hub:model_output_path") == 1, "the Hub audit row")
        hub = _counts(store, operator)
        r = c.get(_query(ft))
        assert r.status_code == 200 and sha(r.content) == archive.sha256
        wait_for(lambda: _audited(store, ft, "model_output_path") == 1, "the archive audit row")
        wait_for(lambda: _counts(store, operator)[0] > hub[0], "the archive's dating")
    # The Hub download's batch inserted its audit row and updated nothing.
    assert (hub[0] - before[0], hub[1] - before[1]) == (0, 1)
