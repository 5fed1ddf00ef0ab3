"""Organizations and API keys: random tokens, shown once, stored hashed, scoped, revocable."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tunevault.metadata import tables as t
from tunevault.metadata.base import StoreBase, now
from tunevault.models import ApiKey, KeyLimitOverrides, Organization, Principal, Scope

_TOKEN = re.compile(r"^tv_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")


def _hash_secret(secret: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


class AccountsMixin(StoreBase):
    def create_org(self, name: str) -> Organization:
        org = Organization(id=f"org-{uuid.uuid4().hex[:16]}", name=name, created_at=now())
        with self.engine.begin() as conn:
            conn.execute(t.organizations.insert().values(**org.__dict__))
        return org

    def get_org_by_name(self, name: str) -> Organization | None:
        o = t.organizations.c  # the record's fields; the storage policy columns stay here
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(o.id, o.name, o.created_at).where(o.name == name)).first()
        return Organization(**row._mapping) if row else None

    def create_key(
        self,
        org_id: str,
        name: str,
        scopes: Iterable[Scope],
        limits: KeyLimitOverrides | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; the returned token is shown once and never stored."""
        with self.engine.begin() as conn:
            return _insert_key(conn, org_id, name, scopes, limits, expires_at)

    def rotate_key(
        self, key_id: str, old_expires_at: datetime, new_expires_at: datetime | None
    ) -> tuple[ApiKey, str, datetime] | None:
        """A new key with the live key's organization, name, scopes and limits, and the old
        key set to expire at `old_expires_at` (or sooner, if it already did), in one
        transaction: the new key, its token and the old key's expiry; None when no live
        key has that id."""
        k = t.api_keys.c
        live = sa.and_(
            k.id == key_id,
            k.revoked_at.is_(None),
            sa.or_(k.expires_at.is_(None), k.expires_at > now()),
        )
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t.api_keys).where(live)).first()
            if row is None:
                return None
            old = _key(row._mapping)
            created = _insert_key(
                conn, old.org_id, old.name, old.scopes, old.limits, new_expires_at
            )
            if old.expires_at is None or old.expires_at > old_expires_at:
                conn.execute(
                    t.api_keys.update().where(k.id == key_id).values(expires_at=old_expires_at)
                )
                old = dataclasses.replace(old, expires_at=old_expires_at)
        assert old.expires_at is not None
        return (*created, old.expires_at)

    def list_keys(self, org_id: str | None = None) -> list[ApiKey]:
        q = sa.select(t.api_keys).order_by(t.api_keys.c.created_at)
        if org_id is not None:
            q = q.where(t.api_keys.c.org_id == org_id)
        with self.engine.connect() as conn:
            return [_key(r._mapping) for r in conn.execute(q)]

    def get_key(self, key_id: str) -> ApiKey | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.api_keys).where(t.api_keys.c.id == key_id)).first()
        return _key(row._mapping) if row else None

    def revoke_key(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                t.api_keys.update()
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
        return res.rowcount > 0

    def set_key_limits(self, key_id: str, limits: KeyLimitOverrides) -> bool:
        """Replace a key's limits; False when no such key."""
        with self.engine.begin() as conn:
            res = conn.execute(
                t.api_keys.update()
                .where(t.api_keys.c.id == key_id)
                .values(
                    requests_per_minute=limits.requests_per_minute,
                    max_downloads=limits.max_downloads,
                )
            )
        return res.rowcount > 0

    def authenticate(self, token: str) -> Principal | None:
        """The principal behind a bearer token, or None for a bad, unknown or revoked key
        (an expired one is returned, with its `expires_at`: the caller names the expiry)."""
        m = _TOKEN.match(token)
        if not m:
            return None
        key_id, secret = m.groups()
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.api_keys, t.organizations.c.name.label("org_name"))
                .join(t.organizations, t.organizations.c.id == t.api_keys.c.org_id)
                .where(t.api_keys.c.id == key_id)
            ).first()
        expected = row.secret_sha256 if row else _hash_secret("")
        ok = hmac.compare_digest(expected, _hash_secret(secret))
        if row is None or not ok or row.revoked_at is not None:
            return None
        return principal_of(row._mapping)


def principal_of(m: Any) -> Principal:
    """The principal of an api_keys row joined with its organization's name as org_name."""
    return Principal(
        key_id=m["id"],
        key_name=m["name"],
        org_id=m["org_id"],
        org_name=m["org_name"],
        scopes=_scopes(m["scopes"]),
        limits=_limits(m),
        expires_at=m["expires_at"],
    )


def _insert_key(
    conn: sa.Connection,
    org_id: str,
    name: str,
    scopes: Iterable[Scope],
    limits: KeyLimitOverrides | None,
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    limits = limits or KeyLimitOverrides()
    key = ApiKey(
        id=secrets.token_hex(8),
        org_id=org_id,
        name=name,
        scopes=frozenset(Scope(s) for s in scopes),
        created_at=now(),
        revoked_at=None,
        limits=limits,
        expires_at=expires_at,
    )
    secret = secrets.token_urlsafe(32)
    conn.execute(
        t.api_keys.insert().values(
            id=key.id,
            org_id=org_id,
            name=name,
            secret_sha256=_hash_secret(secret),
            scopes=",".join(sorted(key.scopes)),
            created_at=key.created_at,
            requests_per_minute=limits.requests_per_minute,
            max_downloads=limits.max_downloads,
            expires_at=expires_at,
        )
    )
    return key, f"tv_{key.id}_{secret}"


def _scopes(text: str) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in text.split(",") if s)


def _key(m: Any) -> ApiKey:
    return ApiKey(
        id=m["id"],
        org_id=m["org_id"],
        name=m["name"],
        scopes=_scopes(m["scopes"]),
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        limits=_limits(m),
        expires_at=m["expires_at"],
    )


def _limits(m: Any) -> KeyLimitOverrides:
    return KeyLimitOverrides(m["requests_per_minute"], m["max_downloads"])
