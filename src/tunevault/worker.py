"""The build worker: claims jobs from the queue in the database and runs them.

`archive` jobs pack a checkpoint into its tar.zst; `merge` jobs merge the final LoRA
adapter into the registered base model, store the result as the `merged` checkpoint and
pack it. A lease, renewed while the job runs, lets another worker finish the job of one
that died. Runs inside `tunevault serve` (threads) or alone as `tunevault worker`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tunevault.builds import build_archive
from tunevault.errors import BaseModelNotFound, CheckpointNotFound, TunevaultError
from tunevault.inuse import claim
from tunevault.merge import merge_lora
from tunevault.models import Checkpoint, FileEntry, FineTune, Job, Kind
from tunevault.publish import put_directory
from tunevault.service.readiness import is_database_outage
from tunevault.services import Services
from tunevault.storage import Unsupported
from tunevault.storage.base import blob_key

log = logging.getLogger("tunevault.worker")
MAX_ATTEMPTS = 3


class LeaseLost(Exception):
    """Another worker took the job over: drop our result."""


class Worker:
    def __init__(
        self,
        svc: Services,
        name: str | None = None,
        observe: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.svc = svc
        self.observe = observe  # (job kind, outcome, seconds): the server's build metric
        self.owner = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease = svc.settings.job_lease_seconds

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set; idle polls are `job_poll_seconds` apart."""
        log.info("worker %s started", self.owner)
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception as e:  # the database blinked: keep the worker alive, try again
                if is_database_outage(e):  # expected while it is down: no traceback
                    log.warning("worker %s: the database is unavailable: %s", self.owner, e)
                else:
                    log.exception("worker %s: claiming a job failed", self.owner)
                worked = False
            if not worked:
                stop.wait(self.svc.settings.job_poll_seconds)

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue had nothing claimable."""
        job = self.svc.store.claim_job(self.owner, self.lease)
        if job is None:
            return False
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
        finally:
            stop_beat.set()
            beat.join()
            if self.observe is not None:
                self.observe(job.kind, outcome, time.monotonic() - started)
        return True

    def _heartbeat(self, job: Job, stop: threading.Event) -> None:
        while not stop.wait(self.lease / 3):
            if not self.svc.store.renew_lease(job.id, self.owner, self.lease):
                return

    def _still_mine(self, job: Job) -> None:
        if not self.svc.store.renew_lease(job.id, self.owner, self.lease):
            raise LeaseLost

    def _run(self, job: Job) -> None:
        ckpt = self.svc.store.get_checkpoint(job.checkpoint_id)
        if ckpt is None:
            raise CheckpointNotFound(f"checkpoint {job.checkpoint_id} was deleted")
        if job.kind == "merge":
            ckpt = self._merge(job, ckpt)
        self._still_mine(job)
        settings = self.svc.settings
        build_archive(
            self.svc.store,
            self.svc.storage,
            ckpt,
            level=settings.zstd_level,
            threads=settings.zstd_threads,
        )
        log.info(
            "job %d: built the %s archive of %s step %d",
            job.id,
            ckpt.kind.value,
            ckpt.ft_id,
            ckpt.step,
        )

    def _merge(self, job: Job, ckpt: Checkpoint) -> Checkpoint:
        """Merge and record the merged files as the checkpoint's; the checkpoint with them."""
        store = self.svc.store
        ft = store.fine_tune_by_id(ckpt.ft_id)
        adapter = store.find_checkpoint(ckpt.ft_id, ckpt.step, Kind.ADAPTER)
        if ft is None or adapter is None:
            raise CheckpointNotFound(f"the adapter of {ckpt.ft_id} step {ckpt.step} is gone")
        base = store.get_base_model(ft.org_id, ft.model)
        if base is None:
            raise BaseModelNotFound(missing_base_message(ft))
        scratch = self.svc.settings.data_dir / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch, prefix="merge-") as tmp_name:
            tmp = Path(tmp_name)
            held = os.open(tmp, os.O_RDONLY)  # locked while we merge: gc takes dead ones only
            try:
                if not claim(held, tmp):
                    raise RuntimeError(f"{tmp} was removed before the merge began")
                self._materialize(base.files, tmp / "base")
                self._materialize(adapter.files, tmp / "adapter")
                merge_lora(tmp / "base", tmp / "adapter", tmp / "merged")
                self._still_mine(job)
                files = put_directory(store, self.svc.storage, ft.org_id, tmp / "merged")
            finally:
                os.close(held)
        store.set_checkpoint_files(ckpt.id, files)
        # gc may have collected an output blob between its upload and this manifest: check
        # under the gc lock, and merge again (a retry) if so (see tunevault.gc).
        digests = {f.sha256 for f in files}
        if digests - store.locked_blob_sizes(ft.org_id, digests).keys():
            raise RuntimeError("gc collected merged blobs before they were recorded; retrying")
        return dataclasses.replace(ckpt, files=tuple(sorted(files, key=lambda f: f.path)))

    def _materialize(self, files: tuple[FileEntry, ...], root: Path) -> None:
        """Lay blobs out as a directory: links to local blobs, copies from object storage."""
        storage = self.svc.storage
        for f in files:
            dst = root / f.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                dst.symlink_to(storage.local_path(blob_key(f.sha256)))
            except Unsupported:
                with storage.open_read(blob_key(f.sha256)) as src, dst.open("wb") as out:
                    shutil.copyfileobj(src, out, 4 << 20)


def missing_base_message(ft: FineTune) -> str:
    return (
        f"the merged model of {ft.id} needs its base model {ft.model!r}, which is not in "
        f"the store; push it with `tunevault base push {ft.model} DIR`, and the merge runs"
    )
