"""The queries of garbage collection, and the gc lock that makes them safe to run live.

The gc lock is one database-wide mutex held for a transaction: a PostgreSQL advisory
transaction lock, or SQLite's single write lock. gc takes it to drop a blob's rows or
delete an unrecorded key; writers take it to confirm that what they recorded is still
stored. `tunevault.service.gc` explains why that order cannot lose a referenced blob.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tunevault.metadata import tables as t
from tunevault.metadata.base import StoreBase, now, select_in, upsert
from tunevault.metadata.blobs import _org_blob_sizes
from tunevault.models import Archive, ArchiveFormat

_LOCK_ID = 0x7475_6E65_6763  # "tunegc": the advisory lock key, any constant of our own


class _Referenced(Exception):
    """Rolls back a row drop that found a reference."""


def _take_lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_ID)))
    else:  # SQLite: any write statement takes the database's write lock until commit
        conn.execute(t.blobs.update().where(sa.literal(1) == 0).values(size=t.blobs.c.size))


def _referenced(conn: Connection, sha256: str) -> bool:
    refs = sa.union_all(
        sa.select(t.checkpoint_files.c.sha256).where(t.checkpoint_files.c.sha256 == sha256),
        sa.select(t.base_model_files.c.sha256).where(t.base_model_files.c.sha256 == sha256),
    )
    return conn.execute(sa.select(refs.subquery()).limit(1)).first() is not None


def _recorded(conn: Connection, sha256: str) -> bool:
    for table in (t.blobs, t.org_blobs):
        if conn.execute(sa.select(table.c.sha256).where(table.c.sha256 == sha256)).first():
            return True
    return False


def _insert(
    conn: Connection, table: sa.Table, values: dict[str, object], *, touch: str | None = None
) -> int:
    """Insert a row unless its key exists; then set the `touch` column to its new value."""
    stmt = upsert(conn, table).values(values)
    if touch is None:
        stmt = stmt.on_conflict_do_nothing()
    else:
        keys = [c.name for c in table.primary_key]
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_={touch: values[touch]})
    return conn.execute(stmt).rowcount


class GcMixin(StoreBase):
    @contextmanager
    def _gc_locked(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            _take_lock(conn)
            yield conn

    @contextmanager
    def gc_lock(self) -> Iterator[None]:
        """Hold the gc lock for the block (use no other connection inside it)."""
        with self._gc_locked():
            yield

    # Writers ------------------------------------------------------------------------------

    def record_stored_blob(
        self,
        sha256: str,
        size: int,
        org_id: str,
        ensure_stored: Callable[[], None],
        xxh3: str,
    ) -> None:
        """Record that `org_id` has the blob, with `ensure_stored` (which puts the bytes back
        if gc took them) run under the gc lock. The blob's grace period starts again, and
        a row from before xxh3 digests were recorded gets one."""
        with self._gc_locked() as conn:
            ensure_stored()
            row = {"sha256": sha256, "size": size, "created_at": now()}
            _insert(conn, t.blobs, {**row, "xxh3": xxh3}, touch="created_at")
            b = t.blobs.c
            conn.execute(
                t.blobs.update().where(b.sha256 == sha256, b.xxh3.is_(None)).values(xxh3=xxh3)
            )
            _insert(conn, t.org_blobs, {**row, "org_id": org_id})

    def record_archive(
        self,
        checkpoint_id: int,
        storage_key: str,
        sha256: str,
        size: int,
        stored: Callable[[], bool],
        format: ArchiveFormat = ArchiveFormat.SUMS_FIRST,
    ) -> Archive | None:
        """Record a checkpoint's archive under the gc lock if `stored()` says its bytes are
        there: gc deletes archive keys no row names, and a row recorded before this check
        could name bytes gc took between the write and the row (a download would find it
        gone). None: build it again."""
        archive = Archive(checkpoint_id, storage_key, sha256, size, now(), format)
        with self._gc_locked() as conn:
            if not stored():
                return None
            conn.execute(t.archives.delete().where(t.archives.c.checkpoint_id == checkpoint_id))
            conn.execute(t.archives.insert().values(**archive.__dict__))
        return archive

    def locked_blob_sizes(self, org_id: str, digests: Iterable[str]) -> dict[str, int]:
        """`org_blob_sizes` read under the gc lock: the check after a manifest commit."""
        with self._gc_locked() as conn:
            return _org_blob_sizes(conn, org_id, digests)

    def forget_checkpoint(self, checkpoint_id: int) -> None:
        """Undo a checkpoint commit whose blobs gc collected meanwhile."""
        with self.engine.begin() as conn:
            # Its files, archive and build jobs go by ON DELETE CASCADE (tables.py).
            conn.execute(t.checkpoints.delete().where(t.checkpoints.c.id == checkpoint_id))

    def forget_base_model(self, base_model_id: int) -> None:
        """Undo a base model registration whose blobs gc collected meanwhile."""
        with self.engine.begin() as conn:  # its file rows go by ON DELETE CASCADE
            conn.execute(t.base_models.delete().where(t.base_models.c.id == base_model_id))

    # gc -----------------------------------------------------------------------------------

    def unreferenced_blobs(self, recorded_before: datetime) -> list[tuple[str, int]]:
        """(sha256, size) of blobs recorded before the cutoff that no manifest names."""
        b = t.blobs.c
        refs = sa.union(
            sa.select(t.checkpoint_files.c.sha256), sa.select(t.base_model_files.c.sha256)
        ).subquery()
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(b.sha256, b.size)
                .where(b.created_at < recorded_before, b.sha256.not_in(sa.select(refs.c.sha256)))
                .order_by(b.sha256)
            )
            return [(r.sha256, r.size) for r in rows]

    def drop_blob_rows(self, sha256: str, recorded_before: datetime) -> bool:
        """Under the gc lock, drop the `blobs` and `org_blobs` rows of a blob still
        unreferenced and recorded before the cutoff; False when it no longer qualifies."""
        b = t.blobs.c
        try:
            with self._gc_locked() as conn:
                gone = conn.execute(
                    t.blobs.delete().where(b.sha256 == sha256, b.created_at < recorded_before)
                ).rowcount
                if not gone or _referenced(conn, sha256):
                    raise _Referenced
                conn.execute(t.org_blobs.delete().where(t.org_blobs.c.sha256 == sha256))
        except _Referenced:
            return False
        return True

    def delete_unrecorded(self, sha256: str, delete: Callable[[], object]) -> bool:
        """Under the gc lock, run `delete` (of the blob's key) if no row records or names
        the blob; whether it ran."""
        with self._gc_locked() as conn:
            if _recorded(conn, sha256) or _referenced(conn, sha256):
                return False
            delete()
        return True

    def unrecorded_blobs(self, digests: Iterable[str]) -> set[str]:
        """Those digests without a `blobs` row."""
        wanted = set(digests)
        b = t.blobs.c
        with self.engine.connect() as conn:
            rows = select_in(
                conn, lambda chunk: sa.select(b.sha256).where(b.sha256.in_(chunk)), wanted
            )
        return wanted - {r.sha256 for r in rows}

    def register_blob(self, sha256: str, size: int) -> bool:
        """Give a stored key found without a row one, recorded now: gc's grace then applies
        to it like to any upload. False when a row appeared meanwhile."""
        with self._gc_locked() as conn:
            return bool(
                _insert(conn, t.blobs, {"sha256": sha256, "size": size, "created_at": now()})
            )

    def unrecorded_archives(self, keys: Iterable[str]) -> set[str]:
        """Those archive keys no `archives` row points to."""
        wanted = set(keys)
        a = t.archives.c
        with self.engine.connect() as conn:
            rows = select_in(
                conn, lambda chunk: sa.select(a.storage_key).where(a.storage_key.in_(chunk)), wanted
            )
        return wanted - {r.storage_key for r in rows}

    def delete_unrecorded_archive(self, key: str, delete: Callable[[], object]) -> bool:
        """Under the gc lock, run `delete` if no `archives` row points to the key."""
        a = t.archives.c
        with self._gc_locked() as conn:
            if conn.execute(sa.select(a.checkpoint_id).where(a.storage_key == key)).first():
                return False
            delete()
        return True
