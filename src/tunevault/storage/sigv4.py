"""SigV4 query-string presigning for path-style S3 URLs, computed directly.

botocore's `generate_presigned_url` builds a whole request object, runs its event hooks
and derives the signing key on every call: 200 us of CPU per URL, against this module's
20 (bench/presign_bench.py), and before it the largest share of a redirect answer. The
algorithm itself is two SHA-256s and one HMAC once the day's signing key is known; this
module does just that, with the same output as botocore's (tests/storage/test_s3.py
compares them) and credentials from the client's own chain, so refreshed instance-role
credentials are used as botocore would use them.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
MEMO_ENTRIES = 4096  # distinct URLs kept within one second


class _Frozen(Protocol):  # read-only, as botocore's ReadOnlyCredentials
    @property
    def access_key(self) -> str: ...
    @property
    def secret_key(self) -> str: ...
    @property
    def token(self) -> str | None: ...


class Credentials(Protocol):
    def get_frozen_credentials(self) -> _Frozen: ...


@dataclass(frozen=True)
class StaticCredentials:
    """A fixed key pair without a session token (a dedicated presigning identity)."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = None

    def get_frozen_credentials(self) -> StaticCredentials:
        return self


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


class Presigner:
    """Presigned GET/HEAD URLs for objects of one endpoint, path-style."""

    def __init__(self, endpoint_url: str, region: str, credentials: Credentials) -> None:
        parts = urlsplit(endpoint_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc
        self._path = parts.path.rstrip("/")
        self._region = region
        self._credentials = credentials
        self._keys: dict[tuple[str, str], bytes] = {}  # (secret digest, day) -> signing key
        # This second's URLs: X-Amz-Date counts whole seconds, so within one the same
        # inputs sign to the same URL, and a fleet asking for one object costs one
        # signature a second instead of one per answer.
        self._second = -1
        self._urls: dict[tuple[object, ...], str] = {}

    def _signing_key(self, secret: str, day: str) -> bytes:
        cache_key = (hashlib.sha256(secret.encode()).hexdigest(), day)
        key = self._keys.get(cache_key)
        if key is None:
            key = ("AWS4" + secret).encode()
            for part in (day, self._region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {cache_key: key}  # one day's key at a time
        return key

    def url(
        self,
        method: str,
        bucket: str,
        key: str,
        expires: int,
        params: dict[str, str],
        now: datetime | None = None,
    ) -> str:
        """The presigned URL of `bucket/key` for `method`, valid `expires` seconds from
        `now`; `params` (e.g. response-content-disposition) are signed into it."""
        creds = self._credentials.get_frozen_credentials()
        moment = now or datetime.now(UTC)
        second = int(moment.timestamp())
        if second != self._second:
            self._second, self._urls = second, {}
        memo = (method, bucket, key, expires, *params.items(), creds.access_key, creds.token)
        url = self._urls.get(memo)
        if url is None:
            url = self._sign(method, bucket, key, expires, params, creds, moment)
            if len(self._urls) < MEMO_ENTRIES:
                self._urls[memo] = url
        return url

    def _sign(
        self,
        method: str,
        bucket: str,
        key: str,
        expires: int,
        params: dict[str, str],
        creds: _Frozen,
        moment: datetime,
    ) -> str:
        stamp = moment.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        scope = f"{day}/{self._region}/s3/aws4_request"
        query = {
            **params,
            "X-Amz-Algorithm": ALGORITHM,
            "X-Amz-Credential": f"{creds.access_key}/{scope}",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(expires),
            "X-Amz-SignedHeaders": "host",
        }
        if creds.token:
            query["X-Amz-Security-Token"] = creds.token
        canonical_query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query.items()))
        path = f"{self._path}/{quote(bucket, safe='')}/{quote(key, safe='/~')}"
        canonical = "\n".join(
            (method, path, canonical_query, f"host:{self._host}\n", "host", "UNSIGNED-PAYLOAD")
        )
        to_sign = "\n".join(
            (ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest())
        )
        signing_key = self._signing_key(creds.secret_key, day)
        signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{self._origin}{path}?{canonical_query}&X-Amz-Signature={signature}"
