"""How long a download must wait for an archive being built, from the real state.

Its place in the queue, the running builds' recorded progress (the build's own rate once
it has done a little), and the sizes of what is ahead. The answer is a 409 whose
`Retry-After` is half the estimate (at least 1 s, at most `MAX_RETRY_S`): the client asks
again while the build runs and gets a sharper estimate, and waits under a second past the
end of a build that goes as estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from tunevault.metadata import MetadataStore
from tunevault.metadata.base import now
from tunevault.metadata.buildqueue import ActiveJob
from tunevault.models import JobKind

ASSUMED_RATE = 100 << 20  # bytes/s of a build whose own rate is not known yet
MIN_FRACTION = 0.02  # below this a build's own rate is too noisy to extrapolate
MAX_RETRY_S = 10


@dataclass(frozen=True)
class BuildWait:
    state: str  # "queued" or "building"
    ahead: int  # builds that start before this one (0 once it runs)
    fraction: float | None  # done, of a running build that has recorded progress
    seconds: float  # estimated until the archive is ready

    @property
    def eta(self) -> int:
        return max(1, math.ceil(self.seconds))

    @property
    def retry_after(self) -> int:
        return max(1, min(MAX_RETRY_S, math.ceil(self.seconds / 2)))

    def describe(self) -> str:
        """`building, 40%, about 3 s` or `queued, 2 ahead, about 9 s`."""
        if self.state == "building":
            done = "" if self.fraction is None else f" {math.floor(self.fraction * 100)}%,"
            return f"building,{done} about {self.eta} s"
        return f"queued, {self.ahead} ahead, about {self.eta} s"

    def headers(self) -> dict[str, str]:
        headers = {
            "Retry-After": str(self.retry_after),
            "Tunevault-Build-State": self.state,
            "Tunevault-Queue-Ahead": str(self.ahead),
            "Tunevault-Build-Eta": str(self.eta),
        }
        if self.fraction is not None:
            headers["Tunevault-Build-Progress"] = f"{self.fraction:.2f}"
        return headers


def _fraction(job: ActiveJob) -> float | None:
    if job.state != "running" or not job.progress_total:
        return None
    return min(1.0, (job.progress_done or 0) / job.progress_total)


def remaining_seconds(job: ActiveJob, at: datetime) -> float:
    """A job's time to finish: extrapolated from its own progress, else from its size."""
    fraction = _fraction(job)
    if fraction is not None and fraction >= MIN_FRACTION and job.started_at is not None:
        elapsed = max((at - job.started_at).total_seconds(), 0.0)
        return elapsed * (1 - fraction) / fraction
    if fraction is not None and job.progress_total:
        return job.progress_total * (1 - fraction) / ASSUMED_RATE
    # A merge reads its base and packs about as much again (see tunevault.service.worker).
    return job.input_bytes * (2 if job.kind == JobKind.MERGE else 1) / ASSUMED_RATE


def estimate(jobs: list[ActiveJob], checkpoint_id: int, workers: int, at: datetime) -> BuildWait:
    """The wait of a checkpoint's archive given the active jobs in claim order."""
    mine = next((j for j in jobs if j.checkpoint_id == checkpoint_id), None)
    if mine is None:  # finishing as we looked: ask again soon
        return BuildWait("building", 0, None, 0.0)
    if mine.state == "running":
        return BuildWait("building", 0, _fraction(mine), remaining_seconds(mine, at))
    ahead = [j for j in jobs if j.state == "queued" and j.id < mine.id]
    busy = [j for j in jobs if j.state == "running"]
    backlog = sum(remaining_seconds(j, at) for j in (*busy, *ahead))
    seconds = backlog / max(workers, 1) + remaining_seconds(mine, at)
    return BuildWait("queued", len(ahead), None, seconds)


def build_wait(store: MetadataStore, checkpoint_id: int, workers: int) -> BuildWait:
    """How long the archive of this checkpoint will take; `workers` build in parallel."""
    return estimate(store.active_jobs(), checkpoint_id, workers, now())
