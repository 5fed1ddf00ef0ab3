"""Who is calling: API keys to principals (organization, key, scopes)."""

from __future__ import annotations

from tunevault.models import Principal
from tunevault.service.context import Services


def authenticate(svc: Services, token: str) -> Principal | None:
    """The principal of a live key; None for an unknown or revoked one (compared in
    constant time against the stored hash)."""
    return svc.store.authenticate(token)
