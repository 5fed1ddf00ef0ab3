"""Web console sessions: an API key signed in once, then a random cookie id stored hashed.

A session is only as good as its key: every lookup joins the key and refuses a revoked
one, so revoking a key (console, CLI or database) ends its sessions at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from tunevault.metadata.base import now
from tunevault.models import Principal
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
    expires = created + timedelta(hours=hours)
    svc.store.add_session(_digest(session_id), who.key_id, csrf, created, expires)
    return session_id, Session(principal=who, csrf_token=csrf)


def lookup(svc: Services, session_id: str) -> Session | None:
    """The live session behind a cookie value: unexpired, and its key not revoked."""
    found = svc.store.live_session(_digest(session_id))
    return None if found is None else Session(*found)


def sign_out(svc: Services, session_id: str) -> None:
    svc.store.drop_session(_digest(session_id))


def end_key_sessions(svc: Services, key_id: str) -> None:
    """Drop a revoked key's session rows (lookup already refuses them)."""
    svc.store.drop_key_sessions(key_id)
