"""Share links: one row per link, revoked in place so that the rows are its audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tunevault.metadata import tables as t
from tunevault.metadata.base import StoreBase, now
from tunevault.models import Kind, ShareLink, ShareTarget

LIST_LIMIT = 200


def _select() -> sa.Select[Any]:
    s, c = t.share_links.c, t.checkpoints.c
    return sa.select(t.share_links, c.ft_id, c.step, c.kind).select_from(
        t.share_links.join(t.checkpoints, c.id == s.checkpoint_id)
    )


def _link(m: Any) -> ShareLink:
    fields = {k: m[k] for k in ShareLink.__dataclass_fields__ if k != "kind"}
    return ShareLink(**fields, kind=Kind(m["kind"]))


class SharesMixin(StoreBase):
    def share_target(
        self, org_id: str, checkpoint_id: int, ft_id: str | None
    ) -> ShareTarget | None:
        """The organization's checkpoint (of fine-tune `ft_id`, when given), None if not theirs."""
        c, f, a = t.checkpoints.c, t.fine_tunes.c, t.archives.c
        q = (
            sa.select(c.ft_id, c.step, a.size)
            .select_from(
                t.checkpoints.join(t.fine_tunes, f.id == c.ft_id).outerjoin(
                    t.archives, a.checkpoint_id == c.id
                )
            )
            .where(c.id == checkpoint_id, f.org_id == org_id, f.id == (ft_id or c.ft_id))
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return None if row is None else ShareTarget(row.ft_id, row.step, row.size)

    def add_share_link(
        self,
        link_id: str,
        org_id: str,
        checkpoint_id: int,
        created_by: str,
        created_at: datetime,
        expires_at: datetime,
    ) -> ShareLink:
        with self.engine.begin() as conn:
            conn.execute(
                t.share_links.insert().values(
                    id=link_id,
                    org_id=org_id,
                    checkpoint_id=checkpoint_id,
                    created_by=created_by,
                    created_at=created_at,
                    expires_at=expires_at,
                )
            )
            row = conn.execute(_select().where(t.share_links.c.id == link_id)).one()
        return _link(row._mapping)

    def share_link(self, link_id: str) -> ShareLink | None:
        with self.engine.connect() as conn:
            row = conn.execute(_select().where(t.share_links.c.id == link_id)).first()
        return _link(row._mapping) if row else None

    def revoke_share_link(self, org_id: str, link_id: str, by: str) -> ShareLink | None:
        """Revoke one of the organization's links (again is harmless); None if it has none."""
        s = t.share_links.c
        with self.engine.begin() as conn:
            conn.execute(
                t.share_links.update()
                .where(s.id == link_id, s.org_id == org_id, s.revoked_at.is_(None))
                .values(revoked_at=now(), revoked_by=by)
            )
            row = conn.execute(_select().where(s.id == link_id, s.org_id == org_id)).first()
        return _link(row._mapping) if row else None

    def list_share_links(self, org_id: str, ft_id: str | None = None) -> list[ShareLink]:
        """The organization's links, newest first (at most LIST_LIMIT)."""
        s = t.share_links.c
        q = _select().where(s.org_id == org_id)
        if ft_id is not None:
            q = q.where(t.checkpoints.c.ft_id == ft_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(s.created_at.desc(), s.id).limit(LIST_LIMIT))
            return [_link(r._mapping) for r in rows]
