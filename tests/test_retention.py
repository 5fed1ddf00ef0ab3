"""Retention of intermediate checkpoints, applied by gc: the right steps go, never a final,
each audited, and the dry run lists exactly what the real run drops (SQLite and
PostgreSQL; the commands once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.seaweed import SeaweedFS
from tunevault.metadata import tables as t
from tunevault.metadata.base import now
from tunevault.models import FineTune, Kind, Retention
from tunevault.service import retention
from tunevault.service.context import Services, open_services
from tunevault.service.gc import collect
from tunevault.service.publishing import publish_directory
from tunevault.service.worker import Worker
from tunevault.settings import Settings


def _fine_tune(svc: Services, org_id: str, name: str) -> FineTune:
    return svc.store.create_fine_tune(
        org_id, model="m", model_output_name=name, training_type="Full", status="running"
    )


def _steps(svc: Services, ft: FineTune) -> list[tuple[int, bool]]:
    return sorted({(c.step, c.final) for c in svc.store.list_checkpoints(ft.id)})


def _age(svc: Services, ft: FineTune, step: int, days: int) -> None:
    c = t.checkpoints.c
    with svc.store.engine.begin() as conn:
        conn.execute(
            t.checkpoints.update()
            .where(c.ft_id == ft.id, c.step == step)
            .values(created_at=now() - timedelta(days=days))
        )


def _seed(svc: Services, src: Path) -> tuple[FineTune, FineTune]:
    """Two fine-tunes of `acme`, steps 1-5 intermediate and 6 final; step 1 of the first
    is a real, built checkpoint, the others manifests only."""
    org = svc.store.create_org("acme")
    kept, aged = _fine_tune(svc, org.id, "acme/a"), _fine_tune(svc, org.id, "acme/b")
    publish_directory(svc, kept, src, step=1, kind=Kind.MODEL_OUTPUT, final=False)
    worker = Worker(svc)
    while worker.run_once():
        pass
    for ft in (kept, aged):
        first = 2 if ft is kept else 1
        for step in range(first, 6):
            svc.store.add_checkpoint(ft.id, step, Kind.MODEL_OUTPUT, False, [])
        svc.store.add_checkpoint(ft.id, 6, Kind.MODEL_OUTPUT, True, [])
        svc.store.add_checkpoint(ft.id, 6, Kind.ADAPTER, True, [])
    return kept, aged


def test_the_right_steps_go_never_a_final(database_url: str, tmp_path: Path) -> None:
    _check_retention(Settings(data_dir=tmp_path / "data", database_url=database_url), tmp_path)


def test_the_right_steps_go_on_seaweedfs(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same on S3: a dropped step's archive and blob leave the bucket in gc's pass."""
    seaweedfs.patch_env(monkeypatch)
    with seaweedfs.bucket() as bucket:
        url = seaweedfs.storage_url(bucket)
        _check_retention(Settings(data_dir=tmp_path / "data", storage_url=url), tmp_path)


def _check_retention(settings: Settings, tmp_path: Path) -> None:
    src = tmp_path / "out"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(4000))
    with open_services(settings) as svc:
        kept, aged = _seed(svc, src)
        archive = svc.store.get_archive(svc.store.find_checkpoint(kept.id, 1, Kind.MODEL_OUTPUT).id)  # type: ignore[union-attr]
        assert archive is not None
        # acme keeps its newest 2 intermediate steps; fine-tune b has no count rule of its
        # own but drops what is older than 30 days.
        retention.set_org_policy(svc, "acme", Retention(keep_last=2))
        retention.set_fine_tune_policy(svc, "acme", aged.id, "none", 30)
        _age(svc, aged, 2, 31)
        _age(svc, aged, 6, 400)  # a final, however old, stays
        dry = collect(svc, grace_seconds=0, dry_run=True)
        assert _steps(svc, kept)[0] == (1, False)  # the dry run dropped nothing
        real = collect(svc, grace_seconds=0, dry_run=False)
        assert dry.checkpoints_dropped == real.checkpoints_dropped
        assert {(d.ft_id, d.step) for d in real.checkpoints_dropped} == {
            (kept.id, 3),
            (kept.id, 2),
            (kept.id, 1),
            (aged.id, 2),
        }
        assert _steps(svc, kept) == [(4, False), (5, False), (6, True)]
        assert _steps(svc, aged) == [(1, False), (3, False), (4, False), (5, False), (6, True)]
        assert svc.storage.stat(archive.storage_key) is None  # freed in the same pass
        assert real.archives_deleted == 1 and real.blobs_deleted == 1
        events = [e for e in svc.store.list_events(kept.id) if e.type == "WARNING"]
        assert sorted(e.step for e in events) == [1, 2, 3]
        assert events[0].message.startswith("retention dropped step ")
        assert "beyond the newest 2 intermediate steps" in events[0].message
        # Keeping none drops every intermediate step, still never a final.
        retention.set_org_policy(svc, "acme", Retention(keep_last=0))
        retention.set_fine_tune_policy(svc, "acme", aged.id, "inherit", "inherit")
        collect(svc, grace_seconds=0, dry_run=False)
        assert _steps(svc, kept) == _steps(svc, aged) == [(6, True)]
        assert collect(svc, grace_seconds=0, dry_run=True).checkpoints_dropped == []


def _tv(data_dir: Path, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "tunevault", *args, "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, object] = json.loads(done.stdout)
    return out


def test_commands_set_the_policy_and_gc_lists_what_goes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        ft = _fine_tune(svc, org.id, "acme/a")
        for step in (1, 2, 3):
            svc.store.add_checkpoint(ft.id, step, Kind.ADAPTER, step == 3, [])
    data = settings.data_dir
    assert _tv(data, "retention", "--org", "acme", "--keep-last", "1")["keep_last"] == 1
    dry = _tv(data, "gc", "--dry-run")
    assert dry["checkpoints_dropped"] == [
        {
            "ft_id": ft.id,
            "step": 1,
            "kinds": ["adapter"],
            "reason": "beyond the newest 1 intermediate steps",
        }
    ]
    assert _tv(data, "gc")["checkpoints_dropped"] == dry["checkpoints_dropped"]
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunevault",
            "retention",
            "--org",
            "acme",
            "--keep-last",
            "inherit",
            "--data-dir",
            str(data),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert (
        refused.returncode == 2 and "--fine-tune" in json.loads(refused.stdout)["error"]["message"]
    )
    with open_services(settings) as svc:
        assert _steps(svc, ft) == [(2, False), (3, True)]
        c = t.checkpoints.c
        with svc.store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).where(c.ft_id == ft.id)).scalar() == 2
