"""Choosing a backend by URL scheme. Backends join by calling `register` when their module
is imported; the built-in ones are imported on first use, so that opening local storage
never pays for boto3."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from tunevault.storage.base import Storage

_OPENERS: dict[str, Callable[[str], Storage]] = {}
BUILT_IN = {"file": "tunevault.storage.local", "s3": "tunevault.storage.s3"}


def register(scheme: str, opener: Callable[[str], Storage]) -> None:
    """Make `scheme://...` URLs open with `opener(url)`."""
    _OPENERS[scheme] = opener


def open_storage(url: str) -> Storage:
    """Open the backend named by the URL scheme."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in _OPENERS and scheme in BUILT_IN:
        importlib.import_module(BUILT_IN[scheme])
    opener = _OPENERS.get(scheme)
    if opener is None:
        known = ", ".join(sorted({*BUILT_IN, *_OPENERS}))
        raise ValueError(f"unsupported storage URL scheme: {scheme!r} (known: {known})")
    return opener(url)
