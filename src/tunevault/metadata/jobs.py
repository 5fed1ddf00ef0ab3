"""The build job queue, in the metadata database.

A worker claims a job with a conditional UPDATE that only one worker can win (a queued job,
or a running one whose lease expired), and renews its lease while it works. A worker that
dies stops renewing; once the lease expires another worker takes the job over. One job per
(checkpoint, kind): the same archive is never built by two live workers at once.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from tunevault.metadata import tables as t
from tunevault.metadata.base import StoreBase, now
from tunevault.metadata.notify import announce
from tunevault.models import BuildJob, JobKind, JobState

ACTIVE = (JobState.QUEUED, JobState.RUNNING)
MAX_CLAIMS = 10


def _job(m: Any) -> BuildJob:
    return BuildJob(
        id=m["id"],
        checkpoint_id=m["checkpoint_id"],
        kind=JobKind(m["kind"]),
        state=JobState(m["state"]),
        attempts=m["attempts"],
        lease_owner=m["lease_owner"],
        error_code=m["error_code"],
        error_message=m["error_message"],
    )


def enqueue(conn: sa.Connection, checkpoint_id: int, kind: JobKind) -> None:
    """Queue a job (or re-queue a finished one) inside the caller's transaction; the caller
    wakes this process's workers (`jobs_signal`) once it has committed."""
    announce(conn)
    ts = now()
    row = conn.execute(
        sa.select(t.build_jobs.c.id).where(
            t.build_jobs.c.checkpoint_id == checkpoint_id, t.build_jobs.c.kind == kind
        )
    ).first()
    if row is None:
        conn.execute(
            t.build_jobs.insert().values(
                checkpoint_id=checkpoint_id,
                kind=kind,
                state=JobState.QUEUED,
                attempts=0,
                created_at=ts,
                updated_at=ts,
            )
        )
    else:
        conn.execute(
            t.build_jobs.update()
            .where(t.build_jobs.c.id == row.id, t.build_jobs.c.state.not_in(ACTIVE))
            .values(
                state=JobState.QUEUED,
                attempts=0,
                error_code=None,
                error_message=None,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=ts,
            )
        )


class JobsMixin(StoreBase):
    def claim_job(self, owner: str, lease_seconds: float) -> BuildJob | None:
        """Take the oldest claimable job, or None; safe against any number of workers."""
        jobs = t.build_jobs
        ts = now()
        claimable = sa.or_(
            jobs.c.state == JobState.QUEUED,
            sa.and_(jobs.c.state == JobState.RUNNING, jobs.c.lease_expires_at < ts),
        )
        with self.engine.begin() as conn:
            # A job whose workers keep dying (or cannot record an outcome) stops here.
            conn.execute(
                jobs.update()
                .where(
                    jobs.c.state == JobState.RUNNING,
                    jobs.c.lease_expires_at < ts,
                    jobs.c.attempts >= MAX_CLAIMS,
                )
                .values(
                    state=JobState.FAILED,
                    error_code="internal_error",
                    error_message=f"gave up after {MAX_CLAIMS} attempts",
                    lease_owner=None,
                    updated_at=ts,
                )
            )
            candidates = conn.execute(
                sa.select(jobs.c.id, jobs.c.state, jobs.c.lease_owner)
                .where(claimable)
                .order_by(jobs.c.id)
                .limit(8)
            ).all()
            for job_id, state, previous in candidates:
                won = conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id, claimable)
                    .values(
                        state=JobState.RUNNING,
                        lease_owner=owner,
                        lease_expires_at=ts + timedelta(seconds=lease_seconds),
                        attempts=jobs.c.attempts + 1,
                        updated_at=ts,
                        started_at=ts,
                        progress_done=None,
                        progress_total=None,
                    )
                ).rowcount
                if won:
                    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
                    assert row is not None
                    taken = previous if state == JobState.RUNNING else None
                    return dataclasses.replace(_job(row._mapping), taken_from=taken)
        return None

    def renew_lease(self, job_id: int, owner: str, lease_seconds: float) -> bool:
        """Extend our lease; False when the job is no longer ours (lost to another worker)."""
        jobs = t.build_jobs
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    jobs.update()
                    .where(
                        jobs.c.id == job_id,
                        jobs.c.lease_owner == owner,
                        jobs.c.state == JobState.RUNNING,
                    )
                    .values(lease_expires_at=now() + timedelta(seconds=lease_seconds))
                ).rowcount
            )

    def finish_job(
        self,
        job_id: int,
        owner: str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        retry: bool = False,
    ) -> bool:
        """Record the outcome if we still hold the job: done, failed, or queued again."""
        state = (
            JobState.DONE if error_code is None else (JobState.QUEUED if retry else JobState.FAILED)
        )
        jobs = t.build_jobs
        with self.engine.begin() as conn:
            recorded = bool(
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
                    .values(
                        state=state,
                        error_code=error_code,
                        error_message=error_message,
                        lease_owner=None,
                        lease_expires_at=None,
                        updated_at=now(),
                    )
                ).rowcount
            )
            if recorded and state == JobState.QUEUED:
                announce(conn)
        if recorded and state == JobState.QUEUED:
            self.jobs_signal.notify()
        return recorded

    def set_job_progress(self, job_id: int, owner: str, done: int, total: int) -> None:
        """Record how far a running build is (bytes of `total`), while we hold it."""
        jobs = t.build_jobs
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
                .values(progress_done=done, progress_total=total)
            )

    def jobs_for_checkpoint(self, checkpoint_id: int) -> list[BuildJob]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.build_jobs)
                .where(t.build_jobs.c.checkpoint_id == checkpoint_id)
                .order_by(t.build_jobs.c.id)
            )
            return [_job(r._mapping) for r in rows]

    def job_counts(self) -> dict[str, int]:
        """How many jobs are in each state (the queue depth metric)."""
        jobs = t.build_jobs.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs.state, sa.func.count()).group_by(jobs.state))
            return {state: int(n) for state, n in rows}

    def requeue_failed(self, error_code: str, checkpoint_ids: list[int] | None = None) -> int:
        """Queue again the jobs (of these checkpoints, or all) that failed with this code."""
        if checkpoint_ids is not None and not checkpoint_ids:
            return 0
        jobs = t.build_jobs
        which = [jobs.c.state == JobState.FAILED, jobs.c.error_code == error_code]
        if checkpoint_ids is not None:
            which.append(jobs.c.checkpoint_id.in_(checkpoint_ids))
        with self.engine.begin() as conn:
            count: int = conn.execute(
                jobs.update()
                .where(*which)
                .values(
                    state=JobState.QUEUED,
                    attempts=0,
                    error_code=None,
                    error_message=None,
                    updated_at=now(),
                )
            ).rowcount
            if count:
                announce(conn)
        if count:
            self.jobs_signal.notify()
        return count
