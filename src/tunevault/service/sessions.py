"""Web console sessions: an API key signed in once, then a random cookie id stored hashed.

A session is only as good as its key: every lookup joins the key and refuses a revoked
one, so revoking a key (console, CLI or database) ends its sessions at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from tunevault.metadata import tables as t
from tunevault.metadata.base import now
from tunevault.models import KeyLimitOverrides, Principal, Scope
from tunevault.service.accounts import expired
from tunevault.service.context import Services


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf_token: str  # sent back in every state-changing form


def _digest(session_id: str) -> str:
    # 256 random bits: a fast hash is enough, a stolen table yields no usable cookie.
    return hashlib.sha256(session_id.encode()).hexdigest()


def sign_in(svc: Services, token: str, hours: float) -> tuple[str, Session] | None:
    """A new session for a valid key: (cookie value, session); None for a bad key."""
    who = svc.store.authenticate(token)
    if who is None or expired(who):
        return None
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    created = now()
    with svc.store.engine.begin() as conn:
        # Sign-in is the moment to sweep the key's expired sessions: no timer needed.
        s = t.console_sessions.c
        conn.execute(
            t.console_sessions.delete().where(s.key_id == who.key_id, s.expires_at < created)
        )
        conn.execute(
            t.console_sessions.insert().values(
                id_sha256=_digest(session_id),
                key_id=who.key_id,
                csrf_token=csrf,
                created_at=created,
                expires_at=created + timedelta(hours=hours),
            )
        )
    return session_id, Session(principal=who, csrf_token=csrf)


def lookup(svc: Services, session_id: str) -> Session | None:
    """The live session behind a cookie value: unexpired, and its key not revoked."""
    s, k, o = t.console_sessions.c, t.api_keys.c, t.organizations.c
    q = (
        sa.select(
            s.csrf_token,
            k.id,
            k.name,
            k.org_id,
            k.scopes,
            k.requests_per_minute,
            k.max_downloads,
            o.name.label("org_name"),
        )
        .select_from(
            t.console_sessions.join(t.api_keys, k.id == s.key_id).join(
                t.organizations, o.id == k.org_id
            )
        )
        .where(
            s.id_sha256 == _digest(session_id),
            s.expires_at > now(),
            k.revoked_at.is_(None),
            sa.or_(k.expires_at.is_(None), k.expires_at > now()),  # an expired key's too
        )
    )
    with svc.store.engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        return None
    who = Principal(
        key_id=row.id,
        key_name=row.name,
        org_id=row.org_id,
        org_name=row.org_name,
        scopes=frozenset(Scope(v) for v in row.scopes.split(",") if v),
        limits=KeyLimitOverrides(row.requests_per_minute, row.max_downloads),
    )
    return Session(principal=who, csrf_token=row.csrf_token)


def sign_out(svc: Services, session_id: str) -> None:
    with svc.store.engine.begin() as conn:
        conn.execute(
            t.console_sessions.delete().where(t.console_sessions.c.id_sha256 == _digest(session_id))
        )


def end_key_sessions(svc: Services, key_id: str) -> None:
    """Drop a revoked key's session rows (lookup already refuses them)."""
    with svc.store.engine.begin() as conn:
        conn.execute(t.console_sessions.delete().where(t.console_sessions.c.key_id == key_id))
