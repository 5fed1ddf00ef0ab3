"""The download audit: one row per download answered, listed by the organization's admins."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tunevault.metadata import tables as t
from tunevault.metadata.base import IN_BATCH, StoreBase, now
from tunevault.models import ARCHIVE_KINDS, DownloadRecord


class AuditMixin(StoreBase):
    def record_downloads(
        self, records: Sequence[DownloadRecord], began: Collection[str] = ()
    ) -> None:
        """Insert the records and, in the same transaction, date the last download of the
        archives they (and the downloads that `began`, by sha256) name: the cache's LRU
        order (tunevault.service.cache) costs no write of its own. A Hub file is no
        archive: its download dates nothing."""
        digests = {r.archive_sha256 for r in records if r.kind in ARCHIVE_KINDS} | set(began)
        a = t.archives.c
        with self.engine.begin() as conn:
            if records:
                _insert(conn, records)
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


class AuditPruneMixin(StoreBase):
    """Deleting old audit rows in small transactions: a large table is never locked long."""

    def count_downloads_before(self, cutoff: datetime) -> dict[str, int]:
        """Per organization id, how many download rows are older than the cutoff."""
        a = t.audit_downloads.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(a.org_id, sa.func.count()).where(a.created_at < cutoff).group_by(a.org_id)
            )
            return {org_id: int(n) for org_id, n in rows}

    def prune_downloads_before(self, cutoff: datetime, batch: int) -> int:
        """Delete the rows older than the cutoff, `batch` rows per transaction; how many."""
        a = t.audit_downloads.c
        deleted = 0
        while True:
            with self.engine.begin() as conn:
                ids = (
                    conn.execute(
                        sa.select(a.id).where(a.created_at < cutoff).order_by(a.id).limit(batch)
                    )
                    .scalars()
                    .all()
                )
                if not ids:
                    return deleted
                deleted += conn.execute(t.audit_downloads.delete().where(a.id.in_(ids))).rowcount


def _record(m: Any) -> DownloadRecord:
    return DownloadRecord(**{k: m[k] for k in DownloadRecord.__dataclass_fields__})


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(values), IN_BATCH):
        yield values[i : i + IN_BATCH]


COLUMNS = [f.name for f in fields(DownloadRecord) if f.name != "id"]


def _insert(conn: sa.Connection, records: Sequence[DownloadRecord]) -> None:
    """The rows in one statement. On PostgreSQL a COPY: under a fleet's redirects the
    executemany took 6-8% of a serving process's samples (py-spy), most of it SQLAlchemy's
    per-row parameter handling (BENCHMARKS.md, a fleet's request path)."""
    if conn.dialect.name == "postgresql":
        driver: Any = conn.connection.driver_connection  # psycopg's, in this transaction
        copy_sql = f"COPY {t.audit_downloads.name} ({', '.join(COLUMNS)}) FROM STDIN"
        with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
            for r in records:
                copy.write_row([getattr(r, name) for name in COLUMNS])
        return
    # Not asdict: it deep-copies every value (datetimes too), half of this insert's CPU.
    rows = [{name: getattr(r, name) for name in COLUMNS} for r in records]
    conn.execute(t.audit_downloads.insert(), rows)
