"""The Hugging Face Hub's view of the store: repos, revisions and commits over checkpoints.

A repo is a fine-tune (by its `ft-...` id, or by its output name when no other fine-tune of
the organization has it) or a registered base model (by name), so that an adapter's
`base_model_name_or_path` resolves from the same endpoint. A revision names one checkpoint:
`main` (what `checkpoint=default` downloads), `merged`, `adapter`, `model_output_path` (the
final checkpoint of that kind), `step-N` (the raw checkpoint of step N), or a commit id. A
checkpoint's commit id is the sha1 of its manifest, so the same files have the same commit
on every replica and after every restart.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from tunevault.errors import (
    CheckpointNotFound,
    CheckpointNotReady,
    RepositoryNotFound,
    RevisionNotFound,
    TunevaultError,
)
from tunevault.metadata import MetadataStore
from tunevault.models import BaseModel, Checkpoint, FileEntry, FineTune, JobKind, Kind
from tunevault.service.cache import requeue_evicted
from tunevault.service.context import Services
from tunevault.service.downloads import not_ready, pick_kind, pick_step

MAIN = "main"
BASE_KIND = "base"
_STEP = re.compile(r"step-([0-9]{1,9})")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_KINDS = frozenset(k.value for k in Kind)
# What a fine-tune's output name or a base model's name can be (publish.py refuses the rest).
_NAME = re.compile(r"[^\x00-\x1f\x7f\\\ud800-\udfff]{1,300}")


@dataclass(frozen=True)
class Snapshot:
    """One revision of a repo: a checkpoint's (or a base model's) files, under its commit."""

    repo_id: str
    commit: str
    files: tuple[FileEntry, ...]  # sorted by path
    created_at: datetime
    ft_id: str | None  # None for a base model
    step: int
    kind: str  # the checkpoint's kind, or BASE_KIND
    # Digests of files listed but not stored: a merged checkpoint's files are streamed into
    # its archive, and stored as blobs only once something reads them one by one.
    unstored: frozenset[str] = frozenset()

    def file(self, path: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == path), None)


def commit_id(files: Iterable[FileEntry]) -> str:
    """40 hex digits (a git commit id's shape) naming exactly this manifest."""
    h = hashlib.sha1(usedforsecurity=False)
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.size}\0{f.sha256}\n".encode())
    return h.hexdigest()


def open_snapshot(svc: Services, org_id: str, repo_id: str, revision: str) -> Snapshot:
    """The files of `repo_id` at `revision`, in the caller's organization only: another
    organization's repo is not found, exactly like a missing one."""
    store = svc.store
    if not _NAME.fullmatch(repo_id):
        raise RepositoryNotFound("no repo has that id: it holds characters no name can have")
    ft, ckpts = _find_fine_tune(store, org_id, repo_id)
    if ft is not None:
        workers = max(svc.settings.build_workers, 1)
        return _fine_tune_snapshot(store, repo_id, ft, ckpts, revision, workers)
    base = store.get_base_model(org_id, repo_id)
    if base is None:
        raise RepositoryNotFound(
            f"no fine-tune or base model {repo_id[:300]!r} in your organization; a repo id is a "
            "fine-tune's ft-... id, its output name, or a registered base model's name"
        )
    return _base_snapshot(repo_id, base, revision)


def _find_fine_tune(
    store: MetadataStore, org_id: str, repo_id: str
) -> tuple[FineTune | None, list[Checkpoint]]:
    if repo_id.startswith("ft-"):
        ft_id = repo_id
    else:
        named = store.fine_tune_ids_named(org_id, repo_id)
        if len(named) > 1:
            raise RepositoryNotFound(
                f"{len(named)} fine-tunes are named {repo_id!r}; use the id of the one you "
                f"want as the repo id: {', '.join(named[:10])}"
            )
        if not named:
            return None, []
        ft_id = named[0]
    ft, rows = store.fine_tune_with_archives(org_id, ft_id)
    return ft, [c for c, _ in rows]


def _fine_tune_snapshot(
    store: MetadataStore,
    repo_id: str,
    ft: FineTune,
    ckpts: list[Checkpoint],
    revision: str,
    workers: int,
) -> Snapshot:
    if _COMMIT.fullmatch(revision):
        files_of = store.fine_tune_files(ft.id)
        for ckpt in ckpts:
            files = files_of.get(ckpt.id, ())
            if files and commit_id(files) == revision:
                return _snapshot(store, repo_id, ft, ckpt, files)
        raise RevisionNotFound(f"{repo_id} has no commit {revision}")
    ckpt = _pick(ft, ckpts, revision)
    found = store.get_checkpoint(ckpt.id)
    if found is None or not found.files:  # a merge fills its checkpoint when it finishes
        # ... or its files were evicted from the derived cache: merged again now.
        rebuilding = found is not None and requeue_evicted(store, found)
        raise not_ready(
            store,
            ft,
            ckpt,
            workers,
            error=CheckpointNotReady,
            noun="checkpoint",
            rebuilding=rebuilding,
        )
    return _snapshot(store, repo_id, ft, found, found.files)


def _pick(ft: FineTune, ckpts: list[Checkpoint], revision: str) -> Checkpoint:
    """The checkpoint a revision name means: the download route's own choice."""
    try:
        if revision == MAIN:
            return pick_kind(ft, ckpts, "default")
        if revision in _KINDS:
            return pick_kind(ft, ckpts, revision)
        if step := _STEP.fullmatch(revision):
            return pick_step(ft, ckpts, int(step.group(1)))
    except CheckpointNotFound as e:
        raise RevisionNotFound(f"revision {revision!r}: {e.message}") from None
    raise RevisionNotFound(
        f"unknown revision {revision!r}; use main, merged, adapter, model_output_path, "
        "step-N or a 40-hex commit id"
    )


def _snapshot(
    store: MetadataStore,
    repo_id: str,
    ft: FineTune,
    ckpt: Checkpoint,
    files: tuple[FileEntry, ...],
) -> Snapshot:
    unstored: frozenset[str] = frozenset()
    if ckpt.kind == Kind.MERGED:
        digests = {f.sha256 for f in files}
        unstored = frozenset(digests - store.org_blob_sizes(ft.org_id, digests).keys())
    return Snapshot(
        repo_id=repo_id,
        commit=commit_id(files),
        files=files,
        created_at=ckpt.created_at,
        ft_id=ft.id,
        step=ckpt.step,
        kind=ckpt.kind.value,
        unstored=unstored,
    )


def store_merged_files(svc: Services, org_id: str, snap: Snapshot) -> TunevaultError | None:
    """Queue the storing of a merged checkpoint's files (one job however many ask), and
    the 409 to answer meanwhile, with its wait; None if they are stored now (`snap` may
    come from the resolution cache, a second old)."""
    store = svc.store
    if not snap.unstored - store.org_blob_sizes(org_id, snap.unstored).keys():
        return None
    ft = store.get_fine_tune(org_id, snap.ft_id or "")
    ckpt = store.find_checkpoint(ft.id, snap.step, Kind.MERGED) if ft is not None else None
    if ft is None or ckpt is None:
        return CheckpointNotFound(f"{snap.repo_id} was deleted")
    store.queue_rebuild(ckpt.id, JobKind.MERGE_FILES)
    workers = max(svc.settings.build_workers, 1)
    return not_ready(store, ft, ckpt, workers, error=CheckpointNotReady, noun="files")


def _base_snapshot(repo_id: str, base: BaseModel, revision: str) -> Snapshot:
    commit = commit_id(base.files)
    if revision not in (MAIN, commit):
        raise RevisionNotFound(
            f"base model {repo_id} has one revision: main (commit {commit}), not {revision!r}"
        )
    return Snapshot(
        repo_id=repo_id,
        commit=commit,
        files=base.files,
        created_at=base.created_at,
        ft_id=None,
        step=0,
        kind=BASE_KIND,
    )
