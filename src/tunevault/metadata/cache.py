"""Derived data as a cache: the archives eviction may take, in least recently downloaded
order, what an evicted archive was, and pinned steps (tunevault.service.cache)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tunevault.metadata import tables as t
from tunevault.metadata.base import StoreBase, now, upsert
from tunevault.metadata.collection import _take_lock
from tunevault.metadata.jobs import ACTIVE, enqueue
from tunevault.models import ArchiveFormat, JobKind, JobState, Kind

_LEFT_ALONE = (*ACTIVE, JobState.FAILED)  # a rebuild on its way, or its error the answer


@dataclass(frozen=True)
class Gone:
    """What an evicted archive was: its rebuild must give these bytes again."""

    sha256: str
    format: ArchiveFormat


@dataclass(frozen=True)
class Cached:
    """A built archive eviction may take: its checkpoint's, and the merged files that go
    with it (a merged checkpoint's; 0 otherwise)."""

    checkpoint_id: int
    ft_id: str
    step: int
    kind: Kind
    storage_key: str
    sha256: str
    size: int
    merged_bytes: int


def _pinned(ft_id: Any, step: Any) -> sa.Exists:
    p = t.pins.c
    return sa.select(p.ft_id).where(p.ft_id == ft_id, p.step == step).exists()


def _stored(sha256: Any) -> sa.Exists:
    """A merged file is listed from the merge on, and a blob only once something asked."""
    return sa.select(t.blobs.c.sha256).where(t.blobs.c.sha256 == sha256).exists()


def _merged_files() -> sa.Subquery:
    """Each stored blob merged checkpoints name, once."""
    cf, c = t.checkpoint_files.c, t.checkpoints.c
    return (
        sa.select(cf.sha256, cf.size)
        .select_from(t.checkpoint_files.join(t.checkpoints, cf.checkpoint_id == c.id))
        .where(c.kind == Kind.MERGED.value, _stored(cf.sha256))
        .distinct()
        .subquery()
    )


class CacheMixin(StoreBase):
    def derived_total(self) -> int:
        """Bytes of every archive and every merged file (each blob once)."""
        merged = _merged_files()
        with self.engine.connect() as conn:
            archives = conn.execute(sa.select(sa.func.sum(t.archives.c.size))).scalar()
            files = conn.execute(sa.select(sa.func.sum(merged.c.size))).scalar()
        return int(archives or 0) + int(files or 0)

    def eviction_candidates(self, used_before: datetime) -> list[Cached]:
        """Archives neither built nor downloaded since `used_before`, of steps nobody
        pinned and with no build running, least recently used first."""
        a, c, j, cf = t.archives.c, t.checkpoints.c, t.build_jobs.c, t.checkpoint_files.c
        used = sa.func.coalesce(a.last_download_at, a.created_at)
        building = sa.select(j.id).where(j.checkpoint_id == a.checkpoint_id, j.state.in_(ACTIVE))
        merged = (
            sa.select(sa.func.coalesce(sa.func.sum(cf.size), 0))
            .where(
                cf.checkpoint_id == a.checkpoint_id,
                c.kind == Kind.MERGED.value,
                _stored(cf.sha256),
            )
            .scalar_subquery()
        )
        q = (
            sa.select(
                a.checkpoint_id, c.ft_id, c.step, c.kind, a.storage_key, a.sha256, a.size,
                merged.label("merged_bytes"),
            )
            .select_from(t.archives.join(t.checkpoints, c.id == a.checkpoint_id))
            .where(used < used_before, ~_pinned(c.ft_id, c.step), ~building.exists())
            .order_by(used, a.checkpoint_id)
        )  # fmt: skip
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [
            Cached(**{**r._mapping, "kind": Kind(r.kind), "merged_bytes": int(r.merged_bytes)})
            for r in rows
        ]

    def evict(self, cached: Cached) -> bool:
        """Under the gc lock, drop the archive row (still this archive, its step still not
        pinned), remember what it was, and for a merged checkpoint drop its file rows too:
        the next download queues the rebuild. False when it no longer qualifies."""
        a, cf = t.archives.c, t.checkpoint_files.c
        with self.engine.begin() as conn:
            _take_lock(conn)
            gone = conn.execute(
                t.archives.delete()
                .where(
                    a.checkpoint_id == cached.checkpoint_id,
                    a.sha256 == cached.sha256,
                    ~_pinned(cached.ft_id, cached.step),
                )
                .returning(a.format)
            ).scalar()
            if gone is None:
                return False
            row = {
                "sha256": cached.sha256,
                "size": cached.size,
                "evicted_at": now(),
                "format": gone,
            }
            conn.execute(
                upsert(conn, t.evicted_archives)
                .values(checkpoint_id=cached.checkpoint_id, **row)
                .on_conflict_do_update(index_elements=["checkpoint_id"], set_=row)
            )
            if cached.kind == Kind.MERGED:
                conn.execute(
                    t.checkpoint_files.delete().where(cf.checkpoint_id == cached.checkpoint_id)
                )
        return True

    def evicted_archive(self, checkpoint_id: int) -> Gone | None:
        """What the checkpoint's archive was when it was last evicted, or None."""
        e = t.evicted_archives.c
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(e.sha256, e.format).where(e.checkpoint_id == checkpoint_id)
            ).first()
        return None if found is None else Gone(str(found.sha256), ArchiveFormat(found.format))

    def set_pin(self, ft_id: str, step: int, pinned: bool) -> bool:
        """Pin (or unpin) a step of a fine-tune; False when nothing changed."""
        p = t.pins.c
        with self.engine.begin() as conn:
            if not pinned:
                return bool(
                    conn.execute(t.pins.delete().where(p.ft_id == ft_id, p.step == step)).rowcount
                )
            stmt = upsert(conn, t.pins).values(ft_id=ft_id, step=step, created_at=now())
            return bool(conn.execute(stmt.on_conflict_do_nothing()).rowcount)

    def pinned_steps(self, ft_id: str) -> list[int]:
        p = t.pins.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(p.step).where(p.ft_id == ft_id).order_by(p.step))
            return [int(s) for s in rows.scalars()]

    def evicted_by_org(self, org_id: str | None = None) -> dict[str, tuple[int, int]]:
        """Per organization: (archives evicted and not rebuilt, their bytes)."""
        e, a, c, f = t.evicted_archives.c, t.archives.c, t.checkpoints.c, t.fine_tunes.c
        q = (
            sa.select(f.org_id, sa.func.count(), sa.func.sum(e.size))
            .select_from(
                t.evicted_archives.join(t.checkpoints, c.id == e.checkpoint_id).join(
                    t.fine_tunes, f.id == c.ft_id
                )
            )
            .where(~sa.select(a.checkpoint_id).where(a.checkpoint_id == e.checkpoint_id).exists())
            .group_by(f.org_id)
        )
        if org_id is not None:
            q = q.where(f.org_id == org_id)
        with self.engine.connect() as conn:
            return {r[0]: (int(r[1]), int(r[2] or 0)) for r in conn.execute(q)}

    def queue_rebuild(self, checkpoint_id: int, kind: JobKind) -> None:
        """Queue the checkpoint's job again unless it is queued or running already (one
        rebuild however many ask) or failed (its error is the answer until fixed). Only
        the request that queues it writes: those that poll the rebuild (a held download
        looks every half second) read."""
        j = t.build_jobs.c
        state = sa.select(j.state).where(j.checkpoint_id == checkpoint_id, j.kind == kind)
        with self.engine.connect() as conn:
            if conn.execute(state).scalar() in _LEFT_ALONE:
                return
        # A concurrent first insert raises IntegrityError: that job is ours too. The state
        # is read again inside the transaction, for a job that changed since.
        with contextlib.suppress(sa.exc.IntegrityError), self.engine.begin() as conn:
            if conn.execute(state).scalar() in _LEFT_ALONE:
                return
            enqueue(conn, checkpoint_id, kind)
        self.jobs_signal.notify()
