"""Derived data is a cache under a storage budget (`derived_budget_bytes`).

Uploads (adapters, full outputs, base models) are the truth and never evicted. What builds
make from them (archives of every kind, merged files) can be rebuilt bit for bit, so past
the budget the least recently downloaded archives go, with a merged checkpoint's files.
Eviction runs in `tunevault gc` and after every build.

What is never evicted:
- an archive built or downloaded within `derived_evict_grace_seconds` (in redirect mode at
  least `presign_seconds`, the life of a URL handed out): a download's start and its end
  are dated by the audit writer's batches, not by a write of their own;
- on local disk, an archive a download is reading (it holds a shared flock, see
  tunevault.storage.inuse), whatever its age;
- the steps someone pinned (`tunevault pin`), and checkpoints with a build running.

An evicted archive keeps its sha256 and format (`evicted_archives`). Its next download queues the
rebuild (one job per checkpoint and kind, however many ask) and is answered like any
archive being built; the rebuild must produce that sha256 again, or it fails with
`rebuild_mismatch` and nothing is stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from tunevault.errors import CheckpointNotFound, FineTuneNotFound
from tunevault.layout import blob_key
from tunevault.metadata import MetadataStore
from tunevault.metadata.base import now
from tunevault.metadata.cache import Cached
from tunevault.models import Checkpoint, JobKind, Kind
from tunevault.service.context import Services
from tunevault.settings import Settings
from tunevault.storage import Storage, Unsupported
from tunevault.storage.inuse import exclusive

log = logging.getLogger("tunevault.service.cache")


@dataclass(frozen=True)
class Evicted:
    ft_id: str
    step: int
    kind: str
    sha256: str
    freed_bytes: int  # the archive, and a merged checkpoint's files


def grace_seconds(settings: Settings) -> float:
    """How recently built or downloaded an archive may be and still be evicted."""
    grace = settings.derived_evict_grace_seconds
    if settings.serve_mode == "redirect":  # a URL handed out must keep working
        return max(grace, settings.presign_seconds)
    return grace


def enforce_budget(svc: Services, *, dry_run: bool = False) -> list[Evicted]:
    """Evict least recently used archives until derived bytes fit the budget (or nothing
    evictable is left); what went (or would go)."""
    budget = svc.settings.derived_budget_bytes
    if not budget:
        return []
    total = svc.store.derived_total()
    evicted: list[Evicted] = []
    if total <= budget:
        return evicted
    cutoff = now() - timedelta(seconds=grace_seconds(svc.settings))
    for cached in svc.store.eviction_candidates(cutoff):
        if total <= budget:
            break
        if not dry_run and not _evict(svc, cached):
            continue  # being downloaded, pinned or rebuilt since the listing
        freed = cached.size + cached.merged_bytes
        total -= freed
        evicted.append(Evicted(cached.ft_id, cached.step, cached.kind, cached.sha256, freed))
    if total > budget:
        log.warning(
            "derived bytes %d stay over the budget of %d: the rest is in use", total, budget
        )
    return evicted


def after_build(svc: Services) -> None:
    """The worker's check after each build: a failure here must not fail the build."""
    try:
        for e in enforce_budget(svc):
            log.info("evicted the %s archive of %s step %d", e.kind, e.ft_id, e.step)
    except Exception:
        log.exception("evicting over the derived budget failed; gc tries again")


def _local_path(storage: Storage, key: str) -> str | None:
    try:
        return storage.local_path(key)
    except Unsupported:
        return None


def _evict(svc: Services, cached: Cached) -> bool:
    store, storage = svc.store, svc.storage
    with exclusive(_local_path(storage, cached.storage_key)) as idle:
        if not idle:
            return False  # a download is reading it
        ckpt = store.get_checkpoint(cached.checkpoint_id)
        files = ckpt.files if ckpt is not None and cached.kind == Kind.MERGED else ()
        if not store.evict(cached):
            return False
        # Another checkpoint with the same files shares the key: then it stays.
        store.delete_unrecorded_archive(
            cached.storage_key, partial(storage.delete, cached.storage_key)
        )
    for f in files:  # merged blobs nothing else names (the gc rules, without the grace)
        if store.drop_blob_rows(f.sha256, now()):
            store.delete_unrecorded(f.sha256, partial(storage.delete, blob_key(f.sha256)))
    log.info("evicted the %s archive of %s step %d", cached.kind, cached.ft_id, cached.step)
    return True


def requeue_evicted(store: MetadataStore, ckpt: Checkpoint) -> bool:
    """Queue the rebuild of an evicted archive (a merge, for a merged checkpoint); False
    when the checkpoint's archive was never evicted."""
    if store.evicted_archive(ckpt.id) is None:
        return False
    store.queue_rebuild(ckpt.id, JobKind.MERGE if ckpt.kind == Kind.MERGED else JobKind.ARCHIVE)
    return True


@dataclass(frozen=True)
class Pin:
    ft_id: str
    step: int
    pinned: bool
    rebuilding: int  # evicted archives of the step whose rebuild pinning queued

    def as_json(self) -> dict[str, object]:
        return {
            "ft_id": self.ft_id,
            "step": self.step,
            "pinned": self.pinned,
            "rebuilding": self.rebuilding,
        }


def set_pin(
    svc: Services, ft_id: str, step: int | None, pinned: bool, org_id: str | None = None
) -> Pin:
    """Pin (or unpin) a step of a fine-tune (None: the step of its final checkpoints),
    of `org_id` when given (the admin route; else any: the store-side command). A pinned
    step's evicted archives are rebuilt now."""
    store = svc.store
    ft = store.fine_tune_by_id(ft_id) if org_id is None else store.get_fine_tune(org_id, ft_id)
    if ft is None:
        raise FineTuneNotFound(f"fine-tune {ft_id} not found", param="ft_id")
    _, rows = store.fine_tune_with_archives(ft.org_id, ft.id)
    if step is None:
        finals = [c.step for c, _ in rows if c.final]
        if not finals:
            raise CheckpointNotFound(
                f"fine-tune {ft.id} has no final checkpoint yet: name a step, {ft.id}:STEP",
                param="step",
            )
        step = max(finals)
    at_step = [(c, a) for c, a in rows if c.step == step]
    if not at_step:
        steps = ", ".join(str(s) for s in sorted({c.step for c, _ in rows})) or "none yet"
        raise CheckpointNotFound(
            f"fine-tune {ft.id} has no checkpoint at step {step}; steps: {steps}", param="step"
        )
    store.set_pin(ft.id, step, pinned)
    rebuilding = 0
    if pinned:
        rebuilding = sum(requeue_evicted(store, c) for c, a in at_step if a is None)
    return Pin(ft.id, step, pinned, rebuilding)
