"""The build worker: claims jobs from the queue in the database and runs them.

`archive` jobs pack a checkpoint into its tar.zst; `merge` jobs merge the final LoRA
adapter into the registered base model, straight into the `merged` checkpoint's archive;
`merge_files` jobs store a merged checkpoint's files as blobs. A lease, renewed while the
job runs, lets another worker finish the job of one that died. Runs inside `tunevault
serve` (threads) or alone as `tunevault worker`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tunevault.errors import (
    BaseModelNotFound,
    CheckpointNotFound,
    RebuildMismatch,
    TunevaultError,
)
from tunevault.layout import MERGE_PREFIX, blob_key, scratch_dir
from tunevault.merge import (
    merge_lora,
    merged_digests,
    prepare,
    shard_sizes,
    side_outputs,
)
from tunevault.metadata.notify import listen_for_jobs
from tunevault.models import (
    ArchiveFormat,
    BuildJob,
    Checkpoint,
    FileEntry,
    FineTune,
    JobKind,
    Kind,
)
from tunevault.service.builds import LocalCopy, build_archive, merged_archive_key
from tunevault.service.cache import after_build
from tunevault.service.context import Services, translated
from tunevault.service.mergedfiles import lay_out_base, store_outputs
from tunevault.service.mergestream import StreamedShards
from tunevault.service.progress import JobProgress
from tunevault.service.readiness import is_database_outage
from tunevault.storage import Unsupported
from tunevault.storage.errors import StorageError
from tunevault.storage.inuse import claim

log = logging.getLogger("tunevault.service.worker")
MAX_ATTEMPTS = 3


class LeaseLost(Exception):
    """Another worker took the job over: drop our result."""


@dataclass(frozen=True)
class MergeInputs:
    """A merge's scratch directory, with the base and the adapter laid out in it."""

    tmp: Path
    adapter: tuple[FileEntry, ...]
    base: tuple[FileEntry, ...]

    @property
    def base_dir(self) -> Path:
        return self.tmp / "base"

    @property
    def adapter_dir(self) -> Path:
        return self.tmp / "adapter"


class Worker:
    def __init__(
        self,
        svc: Services,
        name: str | None = None,
        observe: Callable[[str, str, float], None] | None = None,
        takeover: Callable[[], None] | None = None,
    ) -> None:
        self.svc = svc
        self.observe = observe  # (job kind, outcome, seconds): the server's build metric
        self.takeover = takeover  # counts lease takeovers (a metric)
        self.owner = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease = svc.settings.job_lease_seconds

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set (then call `store.jobs_signal.notify()`). Idle, the
        worker sleeps until a job is queued (see tunevault.metadata.notify), looking again
        every `job_poll_seconds` in case a wake-up was lost."""
        log.info("worker %s started", self.owner)
        signal = self.svc.store.jobs_signal
        while not stop.is_set():
            seen = signal.generation
            try:
                worked = self.run_once()
            except Exception as e:  # the database blinked: keep the worker alive, try again
                if is_database_outage(e):  # expected while it is down: no traceback
                    log.warning("worker %s: the database is unavailable: %s", self.owner, e)
                else:
                    log.exception("worker %s: claiming a job failed", self.owner)
                worked = False
            if not worked:
                signal.wait(seen, self.svc.settings.job_poll_seconds)

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue had nothing claimable."""
        job = self.svc.store.claim_job(self.owner, self.lease)
        if job is None:
            return False
        if job.taken_from is not None:
            self._took_over(job)
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job, stop_beat), daemon=True)
        beat.start()
        started, outcome = time.monotonic(), "done"
        try:
            self._run(job)
        except LeaseLost:
            outcome = "lost"
            log.warning("job %d: lease lost to another worker; result dropped", job.id)
        except TunevaultError as e:  # a definite answer (missing base, refused merge, rot)
            outcome = "failed"
            log.warning("job %d (%s) failed: %s", job.id, job.kind, e.message)
            self.svc.store.finish_job(
                job.id, self.owner, error_code=e.code, error_message=e.message
            )
        except Exception as e:  # possibly transient (I/O, network): retry a few times
            outcome = "crashed"
            log.exception("job %d (%s) crashed", job.id, job.kind)
            self.svc.store.finish_job(
                job.id,
                self.owner,
                error_code="internal_error",
                error_message=str(e)[:1000],
                retry=job.attempts < MAX_ATTEMPTS,
            )
        else:
            self.svc.store.finish_job(job.id, self.owner)
            after_build(self.svc)  # derived bytes may now pass the budget
        finally:
            stop_beat.set()
            beat.join()
            if self.observe is not None:
                self.observe(job.kind, outcome, time.monotonic() - started)
        return True

    def _took_over(self, job: BuildJob) -> None:
        # A worker died or stalled past its lease: worth a look (and an alert if frequent).
        log.warning(
            "job %d: taken over from %s, whose lease expired, by %s",
            job.id,
            job.taken_from,
            self.owner,
            extra={"fields": {"job_id": job.id, "old_owner": job.taken_from, "owner": self.owner}},
        )
        if self.takeover is not None:
            self.takeover()

    def _heartbeat(self, job: BuildJob, stop: threading.Event) -> None:
        while not stop.wait(self.lease / 3):
            if not self.svc.store.renew_lease(job.id, self.owner, self.lease):
                return

    def _still_mine(self, job: BuildJob) -> None:
        if not self.svc.store.renew_lease(job.id, self.owner, self.lease):
            raise LeaseLost

    def _run(self, job: BuildJob) -> None:
        try:
            self._build(job)
        except StorageError as e:  # a definite answer too: a full disk fails the job once
            raise translated(e) from e

    def _build(self, job: BuildJob) -> None:
        ckpt = self.svc.store.get_checkpoint(job.checkpoint_id)
        if ckpt is None:
            raise CheckpointNotFound(f"checkpoint {job.checkpoint_id} was deleted")
        progress = JobProgress(self.svc.store, job.id, self.owner, _size(ckpt.files))
        if job.kind == JobKind.MERGE:
            ckpt = self._merge(job, ckpt, progress)
        elif job.kind == JobKind.MERGE_FILES:
            self._merge_files(job, ckpt, progress)
            progress.flush()
            log.info("job %d: stored the merged files of %s step %d", job.id, ckpt.ft_id, ckpt.step)
            return
        else:
            self._still_mine(job)
            self._pack(ckpt, progress, None)
        progress.flush()
        log.info(
            "job %d: built the %s archive of %s step %d",
            job.id,
            ckpt.kind.value,
            ckpt.ft_id,
            ckpt.step,
        )

    def _pack(
        self,
        ckpt: Checkpoint,
        progress: JobProgress,
        local: LocalCopy | None,
        fmt: ArchiveFormat = ArchiveFormat.SUMS_FIRST,
        key: str | None = None,
    ) -> None:
        settings = self.svc.settings
        build_archive(
            self.svc.store,
            self.svc.storage,
            ckpt,
            level=settings.zstd_level,
            threads=settings.zstd_threads,
            progress=progress.add,
            local=local,
            fmt=fmt,
            key=key,
        )

    def _merge(self, job: BuildJob, ckpt: Checkpoint, progress: JobProgress) -> Checkpoint:
        """Merge into the archive, the merged files stored nowhere else (see
        tunevault.service.mergestream): the shards are packed as they are computed, their
        digests taken as they go by and written in `SHA256SUMS` at the end, then recorded
        as the checkpoint's manifest. The base is read once."""
        gone = self.svc.store.evicted_archive(ckpt.id)
        if gone is not None and gone.format == ArchiveFormat.SUMS_FIRST:
            return self._merge_twice(job, ckpt, progress)
        with self._merge_inputs(ckpt, progress, passes=1) as inputs:
            prepared = prepare(inputs.base_dir, inputs.adapter_dir)
            sides = side_outputs(prepared, inputs.tmp / "side")
            sizes = shard_sizes(prepared)
            self._still_mine(job)
            made = tuple(FileEntry(path=name, size=size, sha256="") for name, size in sizes.items())
            files = tuple(FileEntry(path=o.path, size=o.size, sha256=o.sha256) for o in sides)
            level = self.svc.settings.zstd_level
            key = merged_archive_key(ckpt.id, inputs.adapter, inputs.base, level)
            with StreamedShards(prepared, sizes) as shards:
                local = LocalCopy(
                    inputs.tmp / "side", {o.sha256: o.xxh3 for o in sides}, shards.openers()
                )
                packed = dataclasses.replace(ckpt, files=files + made)
                self._pack(packed, progress, local, ArchiveFormat.SUMS_LAST, key)
        return ckpt

    def _merge_twice(self, job: BuildJob, ckpt: Checkpoint, progress: JobProgress) -> Checkpoint:
        """The rebuild of an evicted merged archive built with `SHA256SUMS` first (before
        tunevault packed merges in one pass), to the same bytes: pass one hashes the merged
        files and records the checkpoint's manifest, pass two packs them as they are
        computed again."""
        store = self.svc.store
        with self._merge_inputs(ckpt, progress, passes=2) as inputs:
            prepared = prepare(inputs.base_dir, inputs.adapter_dir)
            outputs = merged_digests(prepared, inputs.tmp / "side", progress.add)
            self._still_mine(job)
            files = tuple(FileEntry(path=o.path, size=o.size, sha256=o.sha256) for o in outputs)
            store.set_checkpoint_files(ckpt.id, files)
            ckpt = dataclasses.replace(ckpt, files=files)
            with StreamedShards(prepared, {o.path: o.size for o in outputs}) as shards:
                xxh3 = {o.sha256: o.xxh3 for o in outputs}
                local = LocalCopy(inputs.tmp / "side", xxh3, shards.openers())
                self._pack(ckpt, progress, local)
        return ckpt

    def _merge_files(self, job: BuildJob, ckpt: Checkpoint, progress: JobProgress) -> None:
        """Store a merged checkpoint's files as blobs, for what reads them one by one (the
        Hub protocol): the merge again, to files this time, which must be the manifest's."""
        store = self.svc.store
        with self._merge_inputs(ckpt, progress, passes=1) as inputs:
            tmp = inputs.tmp
            report = merge_lora(
                inputs.base_dir,
                inputs.adapter_dir,
                tmp / "merged",
                progress=progress.add,
                hash_outputs=True,
            )
            self._still_mine(job)
            made = [FileEntry(path=o.path, size=o.size, sha256=o.sha256) for o in report.files]
            current = store.get_checkpoint(ckpt.id)
            if current is not None and current.files and set(current.files) != set(made):
                raise RebuildMismatch(
                    f"the merged files of {ckpt.ft_id} step {ckpt.step} differ from the "
                    "manifest their archive was built from: its inputs changed (a base model "
                    "pushed again?); not stored"
                )
            org_id = self._org_of(ckpt)
            store_outputs(store, self.svc.storage, org_id, tmp / "merged", report.files)
            store.set_checkpoint_files(ckpt.id, made)
            # gc may have collected an output blob between its upload and this manifest:
            # check under the gc lock, and merge again (a retry) if so (tunevault.service.gc).
            digests = {f.sha256 for f in made}
            if digests - store.locked_blob_sizes(org_id, digests).keys():
                raise RuntimeError("gc collected merged blobs before they were recorded; retrying")

    def _org_of(self, ckpt: Checkpoint) -> str:
        ft = self.svc.store.fine_tune_by_id(ckpt.ft_id)
        if ft is None:
            raise CheckpointNotFound(f"fine-tune {ckpt.ft_id} was deleted")
        return ft.org_id

    @contextlib.contextmanager
    def _merge_inputs(
        self, ckpt: Checkpoint, progress: JobProgress, *, passes: int
    ) -> Iterator[MergeInputs]:
        """A scratch directory holding the base and the adapter of a merged checkpoint, the
        base read where it lies (see tunevault.service.mergedfiles); `passes` over the
        merged bytes, for the progress."""
        store = self.svc.store
        ft = store.fine_tune_by_id(ckpt.ft_id)
        adapter = store.find_checkpoint(ckpt.ft_id, ckpt.step, Kind.ADAPTER)
        if ft is None or adapter is None:
            raise CheckpointNotFound(f"the adapter of {ckpt.ft_id} step {ckpt.step} is gone")
        base = store.get_base_model(ft.org_id, ft.model)
        if base is None:
            raise BaseModelNotFound(missing_base_message(ft))
        progress.extend(passes * _size(base.files))  # the merged model is about the base's size
        scratch = scratch_dir(self.svc.settings.data_dir)
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch, prefix=MERGE_PREFIX) as tmp_name:
            tmp = Path(tmp_name)
            held = os.open(tmp, os.O_RDONLY)  # locked while we merge: gc takes dead ones only
            try:
                if not claim(held, tmp):
                    raise RuntimeError(f"{tmp} was removed before the merge began")
                inputs = MergeInputs(tmp, adapter.files, base.files)
                lay_out_base(self.svc, base.files, inputs.base_dir)
                self._materialize(adapter.files, inputs.adapter_dir)
                yield inputs
            finally:
                os.close(held)

    def _materialize(self, files: tuple[FileEntry, ...], root: Path) -> None:
        """Lay blobs out as a directory: links to local blobs, copies from object storage
        (an adapter: a few MB)."""
        storage = self.svc.storage
        for f in files:
            dst = root / f.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                dst.symlink_to(storage.local_path(blob_key(f.sha256)))
            except Unsupported:
                with storage.open_read(blob_key(f.sha256)) as src, dst.open("wb") as out:
                    shutil.copyfileobj(src, out, 4 << 20)


def _size(files: tuple[FileEntry, ...]) -> int:
    return sum(f.size for f in files)


def start_listener(svc: Services, stop: threading.Event) -> threading.Thread | None:
    """On PostgreSQL, wake this process's workers for jobs other processes queue."""
    if not svc.store.url.startswith("postgresql"):
        return None
    listener = threading.Thread(
        target=listen_for_jobs,
        args=(svc.store.url, svc.store.jobs_signal, stop),
        name="job-listener",
        daemon=True,
    )
    listener.start()
    return listener


def missing_base_message(ft: FineTune) -> str:
    return (
        f"the merged model of {ft.id} needs its base model {ft.model!r}, which is not in "
        f"the store; push it with `tunevault base push {ft.model} DIR`, and the merge runs"
    )
