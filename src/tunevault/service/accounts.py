"""Who is calling: API keys to principals (organization, key, scopes, limits).

A replica keeps what it looked up for `auth_cache_seconds`: a fleet's requests then cost
no database round trip each, and a revoked key or a changed limit still takes effect
within that time on every replica. An expiry takes effect at its moment: the cache checks
it on every hit.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from tunevault.errors import KeyExpired, NotFound
from tunevault.models import ApiKey, KeyLimitOverrides, Organization, Principal, Scope
from tunevault.service.context import Services

MAX_CACHED = 10_000


def create_key(
    svc: Services,
    org_name: str,
    name: str,
    scopes: Iterable[Scope],
    limits: KeyLimitOverrides,
    lifetime: timedelta | None = None,
) -> tuple[Organization, ApiKey, str]:
    """A new key of the organization (created if new), expiring after `lifetime` if one
    is given; the token is returned once."""
    org = svc.store.get_org_by_name(org_name) or svc.store.create_org(org_name)
    expires_at = now() + lifetime if lifetime is not None else None
    key, token = svc.store.create_key(org.id, name, scopes, limits, expires_at)
    return org, key, token


def rotate_key(
    svc: Services, key_id: str, grace: timedelta, lifetime: timedelta | None
) -> tuple[ApiKey, str, datetime]:
    """A new key like the live key `key_id` (organization, name, scopes, limits), which
    itself expires after `grace`: the new key, its token and the old key's expiry. The new
    key lives `lifetime`, by default as long as the old one was made to (none if it never
    expired)."""
    old = svc.store.get_key(key_id)
    if lifetime is None and old is not None and old.expires_at is not None:
        lifetime = old.expires_at - old.created_at
    start = now()
    rotated = svc.store.rotate_key(
        key_id, start + grace, start + lifetime if lifetime is not None else None
    )
    if rotated is None:
        raise NotFound(
            f"no live key {key_id!r} (revoked, expired or unknown): `tunevault keys list` "
            "shows the ids; `tunevault keys create` makes a new one"
        )
    return rotated


def list_keys(svc: Services, org_name: str | None) -> list[ApiKey]:
    """Every key, or one organization's (NotFound if it does not exist)."""
    if org_name is None:
        return svc.store.list_keys()
    org = svc.store.get_org_by_name(org_name)
    if org is None:
        raise NotFound(f"no organization named {org_name!r}; `tunevault keys list` shows all")
    return svc.store.list_keys(org.id)


def set_key_limits(svc: Services, key_id: str, limits: KeyLimitOverrides) -> None:
    if not svc.store.set_key_limits(key_id, limits):
        raise NotFound(f"no key {key_id!r}; `tunevault keys list` shows the ids")


def revoke_key(svc: Services, key_id: str) -> None:
    if not svc.store.revoke_key(key_id):
        raise NotFound(f"no active key {key_id!r}; `tunevault keys list` shows the ids")


def authenticate(svc: Services, token: str) -> Principal | None:
    """The principal of a live key; None for an unknown or revoked one (compared in
    constant time against the stored hash). An expired key raises KeyExpired."""
    who = svc.store.authenticate(token)
    if who is not None and expired(who):
        raise KeyExpired(
            f"API key {who.key_id} expired at {who.expires_at:%Y-%m-%dT%H:%M:%SZ}; ask an "
            f"operator for a new one (`tunevault keys rotate {who.key_id}` or "
            "`tunevault keys create`)"
        )
    return who


def expired(who: Principal, at: datetime | None = None) -> bool:
    return who.expires_at is not None and who.expires_at <= (at or now())


class KeyCache:
    """Recent successful lookups, by a digest of the token (the token is not kept)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: dict[bytes, tuple[float, Principal]] = {}

    def get(self, token: str) -> tuple[Principal | None, bool]:
        """The principal looked up less than `seconds` ago (else None: look it up), and
        whether it is past half its time (worth looking up again before it lapses), from
        one digest of the token."""
        hit = self._entries.get(_digest(token))
        if hit is None:
            return None, False
        age = time.monotonic() - hit[0]
        if age >= self.seconds or expired(hit[1]):
            return None, False  # an expired key is looked up again, to be refused as expired
        return hit[1], age >= self.seconds / 2

    def drop(self, token: str) -> None:
        self._entries.pop(_digest(token), None)

    def put(self, token: str, who: Principal) -> None:
        if not self.seconds:
            return
        if len(self._entries) >= MAX_CACHED:  # drop the oldest: dicts keep insertion order
            del self._entries[next(iter(self._entries))]
        key = _digest(token)
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic(), who)


def now() -> datetime:
    return datetime.now(UTC)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
