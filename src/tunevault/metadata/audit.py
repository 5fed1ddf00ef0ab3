"""The download audit: one row per download answered, listed by the organization's admins."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa

from tunevault.metadata import tables as t
from tunevault.metadata.base import IN_BATCH, StoreBase, now
from tunevault.models import DownloadRecord


class AuditMixin(StoreBase):
    def record_downloads(
        self, records: Sequence[DownloadRecord], began: Collection[str] = ()
    ) -> None:
        """Insert the records and, in the same transaction, date the last download of the
        archives they (and the downloads that `began`, by sha256) name: the cache's LRU
        order (tunevault.service.cache) costs no write of its own."""
        rows = [{k: v for k, v in asdict(r).items() if k != "id"} for r in records]
        digests = {r.archive_sha256 for r in records} | set(began)
        a = t.archives.c
        with self.engine.begin() as conn:
            if rows:
                conn.execute(t.audit_downloads.insert(), rows)
            for chunk in _chunks(sorted(digests)):
                conn.execute(
                    t.archives.update().where(a.sha256.in_(chunk)).values(last_download_at=now())
                )

    def list_downloads(
        self, org_id: str, *, limit: int = 100, before_id: int | None = None
    ) -> list[DownloadRecord]:
        """Newest first; page with `before_id` (the smallest id of the previous page)."""
        a = t.audit_downloads.c
        q = sa.select(t.audit_downloads).where(a.org_id == org_id)
        if before_id is not None:
            q = q.where(a.id < before_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(a.id.desc()).limit(limit))
            return [_record(r._mapping) for r in rows]


def _record(m: Any) -> DownloadRecord:
    return DownloadRecord(**{k: m[k] for k in DownloadRecord.__dataclass_fields__})


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(values), IN_BATCH):
        yield values[i : i + IN_BATCH]
