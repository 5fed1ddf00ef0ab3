"""The build queue as a waiting download sees it: every active job, its size and progress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from tunevault.metadata import tables as t
from tunevault.metadata.base import StoreBase
from tunevault.metadata.jobs import ACTIVE
from tunevault.models import JobKind, JobState

MERGES = (JobKind.MERGE, JobKind.MERGE_FILES)  # their input is the base model


@dataclass(frozen=True)
class ActiveJob:
    id: int
    checkpoint_id: int
    kind: JobKind
    state: JobState  # queued or running
    started_at: datetime | None
    progress_done: int | None
    progress_total: int | None
    input_bytes: int  # the checkpoint's files; for a merge, its base model's


class BuildQueueMixin(StoreBase):
    def active_jobs(self) -> list[ActiveJob]:
        """Queued and running jobs in claim order (oldest first), with their sizes."""
        j, c, f = t.build_jobs.c, t.checkpoints.c, t.fine_tunes.c
        cf, bm, bmf = t.checkpoint_files.c, t.base_models.c, t.base_model_files.c
        files = (
            sa.select(sa.func.coalesce(sa.func.sum(cf.size), 0))
            .where(cf.checkpoint_id == j.checkpoint_id)
            .scalar_subquery()
        )
        base = (
            sa.select(sa.func.coalesce(sa.func.sum(bmf.size), 0))
            .select_from(t.base_models.join(t.base_model_files, bmf.base_model_id == bm.id))
            .where(bm.org_id == f.org_id, bm.name == f.model)
            .scalar_subquery()
        )
        query = (
            sa.select(
                j.id,
                j.checkpoint_id,
                j.kind,
                j.state,
                j.started_at,
                j.progress_done,
                j.progress_total,
                sa.case((j.kind.in_(MERGES), base), else_=files).label("input_bytes"),
            )
            .select_from(
                t.build_jobs.join(t.checkpoints, c.id == j.checkpoint_id).join(
                    t.fine_tunes, f.id == c.ft_id
                )
            )
            .where(j.state.in_(ACTIVE))
            .order_by(j.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        # PostgreSQL sums bigints as numeric: back to int.
        return [
            ActiveJob(
                **{
                    **r._mapping,
                    "kind": JobKind(r.kind),
                    "state": JobState(r.state),
                    "input_bytes": int(r.input_bytes),
                }
            )
            for r in rows
        ]
