"""Who is calling: API keys to principals (organization, key, scopes, limits).

A replica keeps what it looked up for `auth_cache_seconds`: a fleet's requests then cost
no database round trip each, and a revoked key or a changed limit still takes effect
within that time on every replica.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

from tunevault.errors import NotFound
from tunevault.models import ApiKey, KeyLimitOverrides, Organization, Principal, Scope
from tunevault.service.context import Services

MAX_CACHED = 10_000


def create_key(
    svc: Services,
    org_name: str,
    name: str,
    scopes: Iterable[Scope],
    limits: KeyLimitOverrides,
) -> tuple[Organization, ApiKey, str]:
    """A new key of the organization (created if new); the token is returned once."""
    org = svc.store.get_org_by_name(org_name) or svc.store.create_org(org_name)
    key, token = svc.store.create_key(org.id, name, scopes, limits)
    return org, key, token


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
    constant time against the stored hash)."""
    return svc.store.authenticate(token)


class KeyCache:
    """Recent successful lookups, by a digest of the token (the token is not kept)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: dict[bytes, tuple[float, Principal]] = {}

    def get(self, token: str) -> Principal | None:
        """The principal looked up less than `seconds` ago, else None (look it up)."""
        hit = self._entries.get(_digest(token))
        if hit is None or time.monotonic() - hit[0] >= self.seconds:
            return None
        return hit[1]

    def put(self, token: str, who: Principal) -> None:
        if not self.seconds:
            return
        if len(self._entries) >= MAX_CACHED:  # drop the oldest: dicts keep insertion order
            del self._entries[next(iter(self._entries))]
        key = _digest(token)
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic(), who)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
