"""What operators ask of the service: how deep is the build queue, who downloaded what
(the audit, per organization). Readiness is in readiness.py."""

from __future__ import annotations

from tunevault.models import DownloadRecord, JobState
from tunevault.service.context import Services


def queue_depth(svc: Services) -> dict[JobState, int]:
    counts = svc.store.job_counts()
    return {state: counts.get(state, 0) for state in (JobState.QUEUED, JobState.RUNNING)}


def list_downloads(
    svc: Services, org_id: str, *, limit: int, before_id: int | None
) -> list[DownloadRecord]:
    """The organization's downloads, newest first."""
    return svc.store.list_downloads(org_id, limit=limit, before_id=before_id)
