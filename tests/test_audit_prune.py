"""Audit pruning on SQLite and PostgreSQL: the dry run counts exactly what the real run
deletes, in batches, and nothing newer than the cutoff goes."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.cli import store_cli
from tunevault.models import DownloadRecord
from tunevault.service.auditprune import prune_audit
from tunevault.service.context import open_services
from tunevault.settings import Settings


def record(org_id: str, age: timedelta) -> DownloadRecord:
    return DownloadRecord(
        datetime.now(UTC) - age,
        org_id,
        "key",
        "ft-x",
        1,
        "adapter",
        "0" * 64,
        0,
        9,
        9,
        200,
        "proxy",
        None,
        None,
    )


def prune_cli(settings: Settings, *args: str) -> dict[str, object]:
    done = store_cli(settings, "audit", "prune", *args, "--json")
    assert "audit rows older than 90 days" in done.stderr
    out: dict[str, object] = json.loads(done.stdout)
    return out


def test_prune_deletes_in_batches_what_the_dry_run_listed(
    tmp_path: Path, database_url: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with open_services(settings) as svc:
        old = [record("org-a", timedelta(days=100 + i)) for i in range(7)]
        old += [record("org-b", timedelta(days=91))]
        recent = [record("org-a", timedelta(days=89)), record("org-b", timedelta(days=1))]
        svc.store.record_downloads(old + recent)
        dry = prune_audit(svc, timedelta(days=90), dry_run=True)
        assert (dry.by_org, dry.deleted) == ({"org-a": 7, "org-b": 1}, 0)
        assert len(svc.store.list_downloads("org-a")) == 8  # the dry run deleted nothing
        done = prune_audit(svc, timedelta(days=90), dry_run=False, batch=3)  # 3 + 3 + 2
        assert (done.by_org, done.deleted) == (dry.by_org, 8)
        kept = svc.store.list_downloads("org-a") + svc.store.list_downloads("org-b")
        assert sorted(r.created_at for r in kept) == sorted(r.created_at for r in recent)
        svc.store.record_downloads([replace(old[0], org_id="org-c")])
    listed = prune_cli(settings, "--older-than", "90d", "--dry-run")
    assert (listed["rows"], listed["by_org"], listed["deleted"]) == (1, {"org-c": 1}, 0)
    pruned = prune_cli(settings, "--older-than", "90d")
    assert (pruned["rows"], pruned["deleted"]) == (1, 1)
    with open_services(settings) as svc:
        assert svc.store.list_downloads("org-c") == []
        assert len(svc.store.list_downloads("org-b")) == 1


def test_gc_prunes_the_audit_past_audit_retention_days(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with open_services(settings) as svc:
        old = [record("org-a", timedelta(days=31 + i)) for i in range(3)]
        recent = [record("org-a", timedelta(days=29))]
        svc.store.record_downloads(old + recent)

    def gc(*args: str, days: str | None = None) -> subprocess.CompletedProcess[str]:
        if days is not None:
            monkeypatch.setenv("TUNEVAULT_AUDIT_RETENTION_DAYS", days)
        return store_cli(settings, "gc", *args)

    assert json.loads(gc("--json").stdout)["audit_rows_pruned"] == 0  # off by default
    dry = gc("--dry-run", days="30")
    assert "would delete 3 download audit rows older than 30 days" in dry.stdout
    with open_services(settings) as svc:
        assert len(svc.store.list_downloads("org-a")) == 4
    assert json.loads(gc("--json", days="30").stdout)["audit_rows_pruned"] == 3
    with open_services(settings) as svc:
        kept = svc.store.list_downloads("org-a")
    assert [r.created_at for r in kept] == [r.created_at for r in recent]
    assert "deleted 0 download audit rows older than 30 days" in gc(days="30").stdout


def test_recorded_rows_read_back_as_written(tmp_path: Path, database_url: str) -> None:
    # PostgreSQL takes the batch as a COPY, SQLite as an executemany: the same rows back.
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    odd = replace(
        record("org-a", timedelta(0)),
        client="2001:db8::1",
        user_agent='agent "x"\ttab\\ ünï',
        status=206,
        range_start=5,
    )
    written = [record("org-a", timedelta(seconds=i)) for i in range(3, 0, -1)] + [odd]
    with open_services(settings) as svc:
        svc.store.record_downloads(written)
        read = svc.store.list_downloads("org-a")
    assert [replace(r, id=0) for r in reversed(read)] == written
