"""Web console sessions: rows keyed by the sha256 of the cookie value, each tied to a key."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from tunevault.metadata import tables as t
from tunevault.metadata.accounts import principal_of
from tunevault.metadata.base import StoreBase, now
from tunevault.models import Principal


class SessionsMixin(StoreBase):
    def add_session(
        self, digest: str, key_id: str, csrf_token: str, created: datetime, expires: datetime
    ) -> None:
        """Record a session, sweeping the key's expired ones: sign-in is the moment to,
        with no timer needed."""
        s = t.console_sessions.c
        with self.engine.begin() as conn:
            conn.execute(
                t.console_sessions.delete().where(s.key_id == key_id, s.expires_at < created)
            )
            conn.execute(
                t.console_sessions.insert().values(
                    id_sha256=digest,
                    key_id=key_id,
                    csrf_token=csrf_token,
                    created_at=created,
                    expires_at=expires,
                )
            )

    def live_session(self, digest: str) -> tuple[Principal, str] | None:
        """(principal, CSRF token) of an unexpired session whose key is not revoked."""
        s, k, o = t.console_sessions.c, t.api_keys.c, t.organizations.c
        q = (
            sa.select(t.api_keys, o.name.label("org_name"), s.csrf_token)
            .select_from(
                t.console_sessions.join(t.api_keys, k.id == s.key_id).join(
                    t.organizations, o.id == k.org_id
                )
            )
            .where(
                s.id_sha256 == digest,
                s.expires_at > now(),
                k.revoked_at.is_(None),
                sa.or_(k.expires_at.is_(None), k.expires_at > now()),  # an expired key's too
            )
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return None if row is None else (principal_of(row._mapping), row.csrf_token)

    def drop_session(self, digest: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                t.console_sessions.delete().where(t.console_sessions.c.id_sha256 == digest)
            )

    def drop_key_sessions(self, key_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(t.console_sessions.delete().where(t.console_sessions.c.key_id == key_id))
