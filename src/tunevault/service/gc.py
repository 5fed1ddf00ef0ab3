"""Garbage collection: free the storage that no manifest or archive row refers to.

What goes:
- intermediate checkpoints the retention policies drop (tunevault.service.retention),
  first, so that their archives and blobs can go in the same pass;
- archives (and merged files) past the derived budget, least recently downloaded first
  (tunevault.service.cache): evicted, rebuilt on their next download;
- a blob (`blobs/sha256/..`) that no checkpoint or base model file names, recorded longer
  than the grace period ago (`blobs.created_at`, restarted by every upload of it). Owning
  it (`org_blobs`) does not keep it; its `blobs` and `org_blobs` rows go with it;
- an archive (`archives/..tar.zst`) that no `archives` row points to;
- debris no live process holds (see `tunevault.storage.inuse`) and untouched for the grace period:
  partial uploads `<data_dir>/uploads/**.part`, local-storage temp files
  `<root>/.tmp/*`, merge scratch directories `<data_dir>/tmp/merge-*`;
- S3 multipart uploads started longer than the grace period ago and never completed (a
  build or upload killed mid-write): aborted, which frees their parts;
- with `audit_retention_days` set, download audit rows older than that
  (tunevault.service.auditprune, as `tunevault audit prune` deletes them).
A blob key found without any row (a process died between storing and recording it) is
given a row recorded now, so its grace starts when gc first sees it: no storage mtimes,
no clocks of other machines.

Why it is safe while servers publish. The gc lock (`GcMixin`: one database-wide mutex per
transaction) orders four kinds of critical sections:
- gc "drop": under the lock, drop the rows of a blob that nothing names; commit.
- gc "delete": under the lock, delete the key of a blob that no row records or names.
  A crash between the two leaves a rowless key, which the next run registers and frees
  after the grace; the delete runs with no row to roll back, so a crash there leaves
  nothing inconsistent either.
- "record" (an upload, a stored merge output): under the lock, put the bytes back if
  they are gone, then upsert the rows. So a recorded blob is stored at the moment it is
  recorded, and a "delete" after it sees the row and skips.
- "confirm" (after a manifest insert commits): under the lock, re-read the publishing
  organization's ownership rows; a missing one undoes the manifest and answers
  `invalid_manifest` (upload again).
A manifest first inserts its file rows (committed), then confirms. Take a blob it names:
if gc's drop holds the lock before the confirm, the confirm sees the ownership gone and
the manifest is undone; if after, the drop sees the committed file rows and keeps the
blob. gc's delete needs the rows dropped (or never there) and no file row, so it cannot
follow a confirmed manifest either, unless a "record" put the rows back, in which case the
key was stored under the lock and the delete skips. The same "write, then check under the
lock" protects archive builds (the builder confirms its key after recording the row, and
rebuilds if gc took it) and merged checkpoints (the worker confirms its blobs, and merges
again). Without the lock's ordering a manifest could be checked, then gc drop and delete,
then the manifest commit: a file row naming a missing blob.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial

from tunevault.layout import ARCHIVES, BLOBS, MERGE_PREFIX, blob_key, scratch_dir, staged_parts
from tunevault.metadata.base import now
from tunevault.service import cache, retention
from tunevault.service.auditprune import prune_audit
from tunevault.service.context import Services
from tunevault.storage.inuse import remove_if_idle

log = logging.getLogger("tunevault.service.gc")
_BLOB_KEY = re.compile(r"^blobs/sha256/[0-9a-f]{2}/([0-9a-f]{64})$")
_BATCH = 500


@dataclass
class GcReport:
    dry_run: bool
    blobs_deleted: int = 0
    blob_bytes: int = 0
    blobs_registered: int = 0  # keys found without a row: freed by a later run, past grace
    archives_deleted: int = 0
    archive_bytes: int = 0
    debris_deleted: int = 0  # partial uploads, temp files, merge scratch directories
    debris_bytes: int = 0
    writes_aborted: int = 0  # S3 multipart uploads of dead writers
    builds_requeued: int = 0  # builds that had failed for a full disk, tried again
    audit_rows_pruned: int = 0  # past audit_retention_days (on a dry run: would be)
    # intermediate steps retention dropped (tunevault.service.retention)
    checkpoints_dropped: list[retention.Dropped] = field(default_factory=list)
    # archives evicted over the derived budget, rebuilt on demand (tunevault.service.cache)
    archives_evicted: list[cache.Evicted] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        evicted = sum(e.freed_bytes for e in self.archives_evicted)
        return self.blob_bytes + self.archive_bytes + self.debris_bytes + evicted

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "freed_bytes": self.freed_bytes}


def collect(svc: Services, *, grace_seconds: float, dry_run: bool) -> GcReport:
    """One collection pass (see the module docstring); `dry_run` only counts."""
    report = GcReport(dry_run=dry_run)
    # First: the archives and blobs of the steps it drops can go in this same pass.
    report.checkpoints_dropped = retention.apply(svc, dry_run=dry_run)
    report.archives_evicted = cache.enforce_budget(svc, dry_run=dry_run)
    _collect_blobs(svc, now() - timedelta(seconds=grace_seconds), report)
    _register_unrecorded(svc, report)
    _collect_archives(svc, report)
    _collect_debris(svc, time.time() - grace_seconds, report)
    report.writes_aborted = svc.storage.abort_stale_writes(
        now() - timedelta(seconds=grace_seconds), dry_run=dry_run
    )
    if not dry_run and report.freed_bytes:
        # Builds that failed for a full disk may fit now.
        report.builds_requeued = svc.store.requeue_failed("insufficient_storage")
    if days := svc.settings.audit_retention_days:
        pruned = prune_audit(svc, timedelta(days=days), dry_run=dry_run)
        report.audit_rows_pruned = sum(pruned.by_org.values()) if dry_run else pruned.deleted
    log.info("gc: %s", report.as_dict())
    return report


def _collect_blobs(svc: Services, cutoff: datetime, report: GcReport) -> None:
    store, storage = svc.store, svc.storage
    for sha, size in store.unreferenced_blobs(cutoff):
        if not report.dry_run:
            if not store.drop_blob_rows(sha, cutoff):
                continue  # named or uploaded again since the listing
            if not store.delete_unrecorded(sha, partial(storage.delete, blob_key(sha))):
                continue  # uploaded again between the drop and the delete
        report.blobs_deleted += 1
        report.blob_bytes += size


def _batches(keys: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for key in keys:
        batch.append(key)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _register_unrecorded(svc: Services, report: GcReport) -> None:
    for batch in _batches(svc.storage.list(BLOBS)):
        digests = {}
        for key in batch:
            if m := _BLOB_KEY.fullmatch(key):
                digests[m.group(1)] = key
            else:
                log.warning("gc: %s is not a blob key; left alone", key)
        for sha in sorted(svc.store.unrecorded_blobs(digests)):
            st = svc.storage.stat(digests[sha])
            if st is not None and (report.dry_run or svc.store.register_blob(sha, st.size)):
                report.blobs_registered += 1


def _collect_archives(svc: Services, report: GcReport) -> None:
    store, storage = svc.store, svc.storage
    for batch in _batches(storage.list(ARCHIVES)):
        for key in sorted(store.unrecorded_archives(batch)):
            st = storage.stat(key)
            if st is None:
                continue
            if report.dry_run or store.delete_unrecorded_archive(key, partial(storage.delete, key)):
                report.archives_deleted += 1
                report.archive_bytes += st.size


def _collect_debris(svc: Services, cutoff: float, report: GcReport) -> None:
    data = svc.settings.data_dir
    paths = [
        *staged_parts(data),
        *scratch_dir(data).glob(f"{MERGE_PREFIX}*"),
        *svc.storage.scratch_paths(),
    ]
    for path in sorted(paths):
        size = remove_if_idle(path, cutoff, dry_run=report.dry_run)
        if size is not None:
            report.debris_deleted += 1
            report.debris_bytes += size
