"""A running build's progress, recorded in its job row for the downloads that wait on it."""

from __future__ import annotations

import time

from tunevault.metadata import MetadataStore

INTERVAL_S = 0.5  # at most two writes a second per build, however fast the bytes go


class JobProgress:
    """Bytes a build has done of `total`, written to its job row at a bounded rate."""

    def __init__(self, store: MetadataStore, job_id: int, owner: str, total: int) -> None:
        self.store, self.job_id, self.owner = store, job_id, owner
        self.done, self.total = 0, max(total, 1)
        self._written = float("-inf")
        self.flush()

    def add(self, n: int) -> None:
        self.done += n
        if time.monotonic() - self._written >= INTERVAL_S:
            self.flush()

    def extend(self, total: int) -> None:
        """The work turned out to be `total` bytes in all (a merge's output is now known)."""
        self.total = max(total, self.done, 1)
        self.flush()

    def flush(self) -> None:
        self._written = time.monotonic()
        self.store.set_job_progress(self.job_id, self.owner, min(self.done, self.total), self.total)
