"""Repo ids and revisions to checkpoints (service/hub), on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tunevault.errors import (
    BaseModelNotFound,
    CheckpointNotReady,
    RepositoryNotFound,
    RevisionNotFound,
)
from tunevault.models import FileEntry, Kind
from tunevault.service.context import Services, open_services
from tunevault.service.hub import commit_id, open_snapshot
from tunevault.settings import Settings


def _files(tag: str) -> list[FileEntry]:
    return [FileEntry(f"{tag}.bin", 3, tag * 64), FileEntry("config.json", 2, tag * 64)]


@pytest.fixture
def svc(database_url: str, tmp_path: Path) -> Iterator[Services]:
    with open_services(Settings(data_dir=tmp_path, database_url=database_url)) as svc:
        yield svc


def test_names_revisions_and_commits(svc: Services) -> None:
    org, other = svc.store.create_org("acme"), svc.store.create_org("other")
    ft = svc.store.create_fine_tune(
        org.id, model="base", model_output_name="acme/bot", training_type="Lora"
    )
    svc.store.add_checkpoint(ft.id, 5, Kind.ADAPTER, False, _files("a"))
    final = svc.store.add_checkpoint(ft.id, 9, Kind.ADAPTER, True, _files("b"))
    svc.store.add_checkpoint(ft.id, 9, Kind.MERGED, True, _files("c"))
    by_id = open_snapshot(svc, org.id, ft.id, "main")
    assert (by_id.kind, by_id.step, by_id.ft_id) == ("merged", 9, ft.id)
    assert by_id.commit == commit_id(_files("c"))
    assert open_snapshot(svc, org.id, "acme/bot", "adapter").commit == commit_id(final.files)
    assert open_snapshot(svc, org.id, "acme/bot", "step-5").files == tuple(_files("a"))
    at_commit = open_snapshot(svc, org.id, "acme/bot", commit_id(_files("a")))
    assert (at_commit.step, at_commit.kind) == (5, "adapter")
    for revision in ("step-6", "model_output_path", "f" * 40, "refs/pr/1"):
        with pytest.raises(RevisionNotFound):
            open_snapshot(svc, org.id, ft.id, revision)
    for repo in (ft.id, "acme/bot"):
        with pytest.raises(RepositoryNotFound):
            open_snapshot(svc, other.id, repo, "main")
    with pytest.raises(RepositoryNotFound, match="no repo has that id"):
        open_snapshot(svc, org.id, "bad\x00id", "main")


def test_a_shared_output_name_names_no_repo(svc: Services) -> None:
    org = svc.store.create_org("acme")
    ids = [
        svc.store.create_fine_tune(
            org.id, model="m", model_output_name="dup", training_type="Full"
        ).id
        for _ in range(2)
    ]
    with pytest.raises(RepositoryNotFound, match="2 fine-tunes are named 'dup'") as e:
        open_snapshot(svc, org.id, "dup", "main")
    assert all(i in e.value.message for i in ids)


def test_base_models_have_main_and_their_commit(svc: Services) -> None:
    org = svc.store.create_org("acme")
    svc.store.create_base_model(org.id, "meta/llama", _files("d"))
    commit = commit_id(_files("d"))
    for revision in ("main", commit):
        snap = open_snapshot(svc, org.id, "meta/llama", revision)
        assert (snap.commit, snap.ft_id, snap.kind) == (commit, None, "base")
    with pytest.raises(RevisionNotFound, match=commit):
        open_snapshot(svc, org.id, "meta/llama", "adapter")


def test_a_merge_not_made_yet_or_failed(svc: Services) -> None:
    org = svc.store.create_org("acme")
    ft = svc.store.create_fine_tune(org.id, model="m", model_output_name="o", training_type="Lora")
    svc.store.add_checkpoint(ft.id, 3, Kind.ADAPTER, True, _files("a"))
    merged = svc.store.add_checkpoint(ft.id, 3, Kind.MERGED, True, [], jobs=["merge"])
    with pytest.raises(CheckpointNotReady) as e:
        open_snapshot(svc, org.id, ft.id, "main")
    assert e.value.headers["Retry-After"].isdigit()
    job = svc.store.claim_job("test", 60)
    assert job is not None and job.checkpoint_id == merged.id
    svc.store.finish_job(
        job.id, "test", error_code="base_model_not_found", error_message="no base model 'm'"
    )
    with pytest.raises(BaseModelNotFound, match="no base model 'm'"):
        open_snapshot(svc, org.id, ft.id, "merged")
