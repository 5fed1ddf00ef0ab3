"""Storage policy: usage per organization, its quota on source bytes, and the retention
of intermediate checkpoints (per organization, overridable per fine-tune)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tunevault.metadata import tables as t
from tunevault.metadata.base import StoreBase, now
from tunevault.models import IntermediateStep, Kind, OrgUsage, Retention

NO_RULE = -1  # on a fine-tune: no such rule, whatever its organization says


def _source_blobs(org_id: str | None) -> sa.Select[Any]:
    """org_blobs rows that are uploads: the worker records a merge's outputs there too,
    so a blob only the organization's merged checkpoints name is derived."""
    ob, c, f, cf = t.org_blobs.c, t.checkpoints.c, t.fine_tunes.c, t.checkpoint_files.c
    bm, bf = t.base_models.c, t.base_model_files.c
    files = t.checkpoint_files.join(t.checkpoints, cf.checkpoint_id == c.id).join(
        t.fine_tunes, c.ft_id == f.id
    )
    named = (
        sa.select(cf.sha256).select_from(files).where(f.org_id == ob.org_id, cf.sha256 == ob.sha256)
    )
    merged = named.where(c.kind == Kind.MERGED.value).exists()
    uploaded = named.where(c.kind != Kind.MERGED.value).exists()
    base = (
        sa.select(bf.sha256)
        .select_from(t.base_model_files.join(t.base_models, bf.base_model_id == bm.id))
        .where(bm.org_id == ob.org_id, bf.sha256 == ob.sha256)
        .exists()
    )
    q = sa.select(ob.org_id, sa.func.sum(ob.size).label("n")).where(sa.or_(~merged, uploaded, base))
    if org_id is not None:
        q = q.where(ob.org_id == org_id)
    return q.group_by(ob.org_id)


def _usage_query(org_id: str | None) -> sa.Select[Any]:
    """Every organization's usage, or one's: then each sum is filtered before grouping,
    as the quota check of every upload runs it."""
    o, a, c, f, cf = (
        t.organizations.c,
        t.archives.c,
        t.checkpoints.c,
        t.fine_tunes.c,
        t.checkpoint_files.c,
    )
    source = _source_blobs(org_id).subquery()
    owned = t.checkpoints.join(t.fine_tunes, c.ft_id == f.id)
    mine = sa.true() if org_id is None else f.org_id == org_id
    archived = (
        sa.select(f.org_id, sa.func.sum(a.size).label("n"))
        .select_from(t.archives.join(owned, a.checkpoint_id == c.id))
        .where(mine)
        .group_by(f.org_id)
        .subquery()
    )
    ob = t.org_blobs.c
    stored = sa.select(ob.sha256).where(ob.org_id == f.org_id, ob.sha256 == cf.sha256).exists()
    merged_files = (  # a blob two merged checkpoints share is stored once; listed, not stored: 0
        sa.select(f.org_id, cf.sha256, cf.size)
        .select_from(t.checkpoint_files.join(owned, cf.checkpoint_id == c.id))
        .where(c.kind == Kind.MERGED.value, mine, stored)
        .distinct()
        .subquery()
    )
    m = merged_files.c
    merged = sa.select(m.org_id, sa.func.sum(m.size).label("n")).group_by(m.org_id).subquery()
    return (
        sa.select(
            o.id,
            o.name,
            o.source_quota_bytes,
            sa.func.coalesce(source.c.n, 0).label("source"),
            sa.func.coalesce(archived.c.n, 0).label("archives"),
            sa.func.coalesce(merged.c.n, 0).label("merged"),
        )
        .select_from(
            t.organizations.outerjoin(source, source.c.org_id == o.id)
            .outerjoin(archived, archived.c.org_id == o.id)
            .outerjoin(merged, merged.c.org_id == o.id)
        )
        .order_by(o.name)
    )


def _policy(ft_keep: int | None, ft_age: int | None, org: Retention) -> Retention:
    def pick(own: int | None, inherited: int | None) -> int | None:
        if own is None:
            return inherited
        return None if own == NO_RULE else own

    return Retention(pick(ft_keep, org.keep_last), pick(ft_age, org.max_age_days))


class PolicyMixin(StoreBase):
    def usage(self, org_id: str | None = None) -> list[OrgUsage]:
        """Every organization's usage (or one's), by name."""
        q = _usage_query(org_id)
        if org_id is not None:
            q = q.where(t.organizations.c.id == org_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [
            OrgUsage(
                r.id, r.name, int(r.source), int(r.archives), int(r.merged), r.source_quota_bytes
            )
            for r in rows
        ]

    def set_source_quota(self, org_id: str, quota: int | None) -> None:
        o = t.organizations.c
        with self.engine.begin() as conn:
            conn.execute(
                t.organizations.update().where(o.id == org_id).values(source_quota_bytes=quota)
            )

    def set_org_retention(self, org_id: str, policy: Retention) -> None:
        o = t.organizations.c
        with self.engine.begin() as conn:
            conn.execute(
                t.organizations.update()
                .where(o.id == org_id)
                .values(
                    retention_keep_last=policy.keep_last, retention_max_age_days=policy.max_age_days
                )
            )

    def set_fine_tune_retention(
        self, ft_id: str, keep_last: int | None, max_age_days: int | None
    ) -> None:
        """None: the organization's rule; NO_RULE: none for this fine-tune."""
        f = t.fine_tunes.c
        with self.engine.begin() as conn:
            conn.execute(
                t.fine_tunes.update()
                .where(f.id == ft_id)
                .values(retention_keep_last=keep_last, retention_max_age_days=max_age_days)
            )

    def intermediate_steps(self) -> list[IntermediateStep]:
        """Every step without a final checkpoint, with the policy that applies to it,
        newest step first within each fine-tune."""
        c, f, o = t.checkpoints.c, t.fine_tunes.c, t.organizations.c
        q = (
            sa.select(
                c.id,
                c.ft_id,
                c.step,
                c.kind,
                c.final,
                c.created_at,
                f.org_id,
                f.retention_keep_last.label("ft_keep"),
                f.retention_max_age_days.label("ft_age"),
                o.retention_keep_last.label("org_keep"),
                o.retention_max_age_days.label("org_age"),
            )
            .select_from(
                t.checkpoints.join(t.fine_tunes, c.ft_id == f.id).join(
                    t.organizations, f.org_id == o.id
                )
            )
            .order_by(c.ft_id, c.step.desc(), c.kind)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        by_step: dict[tuple[str, int], list[Any]] = {}
        for r in rows:
            by_step.setdefault((r.ft_id, r.step), []).append(r)
        return [
            IntermediateStep(
                ft_id=ft_id,
                org_id=rs[0].org_id,
                step=step,
                created_at=max(r.created_at for r in rs),
                checkpoint_ids=tuple(r.id for r in rs),
                kinds=tuple(r.kind for r in rs),
                policy=_policy(
                    rs[0].ft_keep, rs[0].ft_age, Retention(rs[0].org_keep, rs[0].org_age)
                ),
            )
            for (ft_id, step), rs in by_step.items()
            if not any(r.final for r in rs)  # a final's step is kept whole
        ]

    def drop_step(self, step: IntermediateStep, reason: str) -> bool:
        """Delete the step's checkpoints (never a final one; their files, archives and
        jobs go by ON DELETE CASCADE) and record a warning event on the fine-tune, in one
        transaction. False when they were gone already."""
        c, kinds = t.checkpoints.c, ", ".join(step.kinds)
        with self.engine.begin() as conn:
            gone = conn.execute(
                t.checkpoints.delete().where(c.id.in_(step.checkpoint_ids), c.final.is_(False))
            ).rowcount
            if gone:
                conn.execute(
                    t.events.insert().values(
                        ft_id=step.ft_id,
                        created_at=now(),
                        # A type of Together's list: the 1.x SDK refuses others.
                        level="warning",
                        type="WARNING",
                        message=f"retention dropped step {step.step} ({kinds}): {reason}",
                        step=step.step,
                    )
                )
        return bool(gone)
