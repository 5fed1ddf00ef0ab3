"""Pruning the download audit: rows older than a cutoff go, a batch per transaction.

The dry run counts exactly the rows the real run with the same cutoff deletes (rows are
only ever added with the current time, so none crosses the cutoff in between).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tunevault.service.context import Services

BATCH = 5000  # rows per DELETE transaction: short locks, few round trips


@dataclass(frozen=True)
class Pruned:
    cutoff: datetime
    by_org: dict[str, int]  # rows older than the cutoff, per organization id
    deleted: int  # 0 on a dry run

    def as_json(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "rows": sum(self.by_org.values()),
            "by_org": self.by_org,
            "deleted": self.deleted,
        }


def prune_audit(
    svc: Services, older_than: timedelta, *, dry_run: bool, batch: int = BATCH
) -> Pruned:
    cutoff = datetime.now(UTC) - older_than
    found = svc.store.count_downloads_before(cutoff)
    deleted = 0 if dry_run else svc.store.prune_downloads_before(cutoff, batch)
    return Pruned(cutoff, found, deleted)
