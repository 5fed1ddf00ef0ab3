"""What the operator CLI reads and writes across organizations (`tunevault admin`): counts
per organization, every fine-tune, and the log of operator actions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from tunevault.metadata import tables as t
from tunevault.metadata.base import StoreBase, now
from tunevault.metadata.finetunes import _select_fine_tunes
from tunevault.models import FineTune


@dataclass(frozen=True)
class OperatorAction:
    id: int
    created_at: datetime
    actor: str
    action: str
    org_id: str
    target: str


class AdminMixin(StoreBase):
    def org_counts(self) -> dict[str, tuple[int, int]]:
        """Per organization id: (fine-tunes, live keys: not revoked, not expired)."""
        o, f, k = t.organizations.c, t.fine_tunes.c, t.api_keys.c
        fts = sa.select(sa.func.count()).where(f.org_id == o.id).scalar_subquery()
        live = sa.and_(
            k.org_id == o.id,
            k.revoked_at.is_(None),
            sa.or_(k.expires_at.is_(None), k.expires_at > now()),
        )
        keys = sa.select(sa.func.count()).where(live).scalar_subquery()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(o.id, fts, keys))
            return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def all_fine_tunes(self, org_id: str | None = None) -> list[FineTune]:
        """Every organization's fine-tunes (or one's), oldest first."""
        f = t.fine_tunes.c
        q = _select_fine_tunes().order_by(f.org_id, f.created_at, f.id)
        if org_id is not None:
            q = q.where(f.org_id == org_id)
        with self.engine.connect() as conn:
            return [FineTune(**r._mapping) for r in conn.execute(q)]

    def record_operator_action(self, actor: str, action: str, org_id: str, target: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                t.operator_actions.insert().values(
                    created_at=now(), actor=actor, action=action, org_id=org_id, target=target
                )
            )

    def list_operator_actions(self, limit: int = 100) -> list[OperatorAction]:
        """Newest first."""
        a = t.operator_actions.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.operator_actions).order_by(a.id.desc()).limit(limit))
            return [OperatorAction(**r._mapping) for r in rows]
