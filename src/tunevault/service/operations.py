"""What operators ask of the service: is it ready, how deep is the build queue, who
downloaded what (the audit, per organization)."""

from __future__ import annotations

from collections.abc import Callable

from tunevault.models import DownloadRecord, JobState
from tunevault.service.context import Services


def readiness(svc: Services) -> dict[str, str]:
    """Each part's state: "ok", or "unavailable (<exception class>)" (never the message,
    which may carry an address or a credential)."""
    probes: dict[str, Callable[[], object]] = {
        "database": svc.store.ping,
        "storage": lambda: svc.storage.stat("readyz"),
    }
    checks = {}
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as e:  # any failure means not ready; say which part, not why
            checks[name] = f"unavailable ({type(e).__name__})"
    return checks


def queue_depth(svc: Services) -> dict[JobState, int]:
    counts = svc.store.job_counts()
    return {state: counts.get(state, 0) for state in (JobState.QUEUED, JobState.RUNNING)}


def list_downloads(
    svc: Services, org_id: str, *, limit: int, before_id: int | None
) -> list[DownloadRecord]:
    """The organization's downloads, newest first."""
    return svc.store.list_downloads(org_id, limit=limit, before_id=before_id)
