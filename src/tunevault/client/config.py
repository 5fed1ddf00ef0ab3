"""Where the server is and which key to send, from flags or the environment.

tunevault's own variables win; Together's let the same client talk to any
Together-compatible server. TOGETHER_BASE_URL is documented both with and without a
trailing /v1, so a trailing /v1 is dropped and every route is spelled in full.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_URL = "http://127.0.0.1:8000"
TOGETHER_URL = "https://api.together.xyz"


def normalize_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    url = url.removesuffix("/v1")
    return url.rstrip("/")


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    api_key: str | None

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        api_key: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ClientConfig:
        env = os.environ if env is None else env
        key = api_key or env.get("TUNEVAULT_API_KEY") or env.get("TOGETHER_API_KEY") or None
        base = url or env.get("TUNEVAULT_URL") or env.get("TOGETHER_BASE_URL")
        if not base:
            # A Together key alone means Together's own API.
            together_only = "TOGETHER_API_KEY" in env and "TUNEVAULT_API_KEY" not in env
            base = TOGETHER_URL if together_only and api_key is None else DEFAULT_URL
        return cls(base_url=normalize_base_url(base), api_key=key)
