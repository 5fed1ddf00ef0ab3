"""S3 storage: keys are objects under an optional prefix of one bucket.

Credentials come only from the standard AWS chain (environment, config files, instance
roles), never from the storage URL. A writer buffers up to one part: a blob that fits is
sent with a single PutObject, a larger one becomes a multipart upload (each part sent
while the next fills) that is completed on commit and aborted otherwise, so readers only
ever see whole objects.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from tunevault.storage.base import BlobReader, BlobStat, BlobWriter, Storage, check_key
from tunevault.storage.errors import BackendUnavailable, BlobTooLarge
from tunevault.storage.registry import register
from tunevault.storage.sigv4 import Presigner, StaticCredentials

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import (
        CompletedPartTypeDef,
        CreateMultipartUploadRequestTypeDef,
        UploadPartRequestTypeDef,
    )

log = logging.getLogger(__name__)

MiB = 1 << 20
DEFAULT_PART_SIZE = 32 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600  # SigV4 limit

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_URL_PARAMS = {"endpoint_url", "public_endpoint_url", "region", "part_size_mib"}
_MISSING = {"404", "NoSuchKey", "NotFound"}  # HEAD errors carry only the status code


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _unavailable_on_error() -> Iterator[None]:
    """Report refused requests, network, credential and server failures as BackendUnavailable.

    Callers handle the expected not-found cases inside the block; whatever else S3 says
    means the store cannot serve us right now. Parameter errors are our bugs and stay.
    The message names only the error kind (it may reach API clients); the chained
    exception keeps endpoint, bucket and key for the logs.
    """
    try:
        yield
    except ParamValidationError:
        raise
    except ClientError as e:
        raise BackendUnavailable(f"S3 refused the request ({_code(e) or 'no code'})") from e
    except BotoCoreError as e:
        raise BackendUnavailable(f"S3 is unavailable ({type(e).__name__})") from e


def _content_disposition(filename: str) -> str:
    """An attachment header with an ASCII fallback and the exact UTF-8 name (RFC 6266)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


class _S3Reader:
    """A file-like over a GetObject body (None for an empty range)."""

    def __init__(self, body: StreamingBody | None) -> None:
        self._body = body

    def read(self, n: int = -1) -> bytes:
        if self._body is None:
            return b""
        with _unavailable_on_error():
            return self._body.read(None if n < 0 else n)

    def close(self) -> None:
        if self._body is not None:
            self._body.close()

    def __enter__(self) -> _S3Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _S3Writer(BlobWriter):
    """Parts are sent by a thread of the writer's own, one at a time, while the next part
    fills: a build's compression goes on during an upload instead of waiting for it.
    Memory: two parts."""

    def __init__(self, store: S3Storage, key: str) -> None:
        super().__init__()
        self._client = store.client
        self._bucket = store.bucket
        self._key = key
        self._part_size = store.part_size
        self._checksums = store.checksums
        self._buf = io.BytesIO()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._numbered = 0
        self._sender: ThreadPoolExecutor | None = None
        self._sending: Future[None] | None = None
        self._state = "open"

    def write(self, data: bytes | memoryview) -> int:
        if self._state != "open":
            raise ValueError(f"write to a {self._state} writer")
        view = memoryview(data).cast("B")
        n = len(view)
        try:
            # Fill the buffer part by part so memory stays bounded by two parts.
            while view:
                room = self._part_size - self._buf.tell()
                self._buf.write(view[:room])
                view = view[room:]
                if self._buf.tell() == self._part_size:
                    self._upload_part()
        except BaseException:
            self.abort()
            raise
        self.size += n
        return n

    def _upload_part(self) -> None:
        """Hand the filled buffer to the sender, once the part before it is sent."""
        self._numbered += 1
        if self._numbered > MAX_PARTS:
            raise BlobTooLarge(
                f"blob exceeds {MAX_PARTS} parts of {self._part_size} bytes; raise part_size_mib"
            )
        self._wait_sent()
        if self._upload_id is None:
            create: CreateMultipartUploadRequestTypeDef = {
                "Bucket": self._bucket,
                "Key": self._key,
                "ContentType": "application/octet-stream",
            }
            if self._checksums:
                create["ChecksumAlgorithm"] = "CRC32"
            with _unavailable_on_error():
                self._upload_id = self._client.create_multipart_upload(**create)["UploadId"]
            self._sender = ThreadPoolExecutor(1, thread_name_prefix="tunevault-s3-part")
        assert self._sender is not None
        body, self._buf = self._buf, io.BytesIO()
        self._sending = self._sender.submit(self._send_part, self._numbered, body)

    def _send_part(self, number: int, body: io.BytesIO) -> None:
        assert self._upload_id is not None
        body.seek(0)
        upload: UploadPartRequestTypeDef = {
            "Bucket": self._bucket,
            "Key": self._key,
            "UploadId": self._upload_id,
            "PartNumber": number,
            "Body": body,
        }
        if self._checksums:
            upload["ChecksumAlgorithm"] = "CRC32"
        with _unavailable_on_error():
            resp = self._client.upload_part(**upload)
        part: CompletedPartTypeDef = {"ETag": resp["ETag"], "PartNumber": number}
        if crc := resp.get("ChecksumCRC32"):
            # An upload created with a checksum algorithm must list every part's checksum.
            part["ChecksumCRC32"] = crc
        self._parts.append(part)

    def _wait_sent(self) -> None:
        """Wait for the part being sent; its failure is raised here."""
        sending, self._sending = self._sending, None
        if sending is not None:
            sending.result()

    def _stop_sender(self) -> None:
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None

    def commit(self) -> None:
        if self._state == "committed":
            return
        if self._state == "aborted":
            raise ValueError("commit of an aborted writer")
        try:
            if self._upload_id is None:
                self._buf.seek(0)
                with _unavailable_on_error():
                    self._client.put_object(
                        Bucket=self._bucket,
                        Key=self._key,
                        Body=self._buf,
                        ContentType="application/octet-stream",
                    )
            else:
                if self._buf.tell():
                    self._upload_part()
                self._wait_sent()
                with _unavailable_on_error():
                    self._client.complete_multipart_upload(
                        Bucket=self._bucket,
                        Key=self._key,
                        UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts},
                    )
        except BaseException:
            self.abort()
            raise
        self._stop_sender()
        self._state = "committed"
        self._buf = io.BytesIO()

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        self._buf = io.BytesIO()
        with contextlib.suppress(Exception):  # its failure is why we abort, or beside it
            self._wait_sent()
        self._stop_sender()
        if self._upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
        except (BotoCoreError, ClientError) as e:
            # The parts stay invisible either way; a lifecycle rule reclaims their space.
            log.warning(
                "could not abort multipart upload %s of s3://%s/%s: %s",
                self._upload_id,
                self._bucket,
                self._key,
                e,
            )


def _client(endpoint_url: str | None, region: str | None) -> S3Client:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=10,
            read_timeout=60,
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=32,  # one per concurrent download or upload
        ),
    )


def _presigner(client: S3Client) -> Presigner | None:
    """Direct SigV4 presigning with the client's endpoint, region and credential chain
    (resolved when the client was made); None when the chain found no credentials."""
    # botocore has no public accessor for the credentials its client resolved.
    credentials = getattr(client, "_request_signer")._credentials  # noqa: B009
    if credentials is None:
        return None
    region = client.meta.region_name or "us-east-1"
    return Presigner(client.meta.endpoint_url, region, credentials)


class S3Storage(Storage):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"invalid S3 bucket name: {bucket!r}")
        if prefix:
            check_key(prefix)
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"S3 part size must be within [5 MiB, 5 GiB], got {part_size}")
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        query = {
            "endpoint_url": endpoint_url,
            "public_endpoint_url": public_endpoint_url,
            "region": region,
        }
        if part_size != DEFAULT_PART_SIZE:
            query["part_size_mib"] = str(part_size // MiB)
        self.url = f"s3://{bucket}/{prefix}"
        if params := {k: v for k, v in query.items() if v is not None}:
            self.url += "?" + urlencode(params)
        # endpoint_url/region None defer to AWS_ENDPOINT_URL[_S3], AWS_REGION and config files.
        self.client: S3Client = _client(endpoint_url, region)
        # SigV4 signs the host, so URLs for clients that reach the store by another address
        # (a public name in front of an internal endpoint) are signed by a client of their own.
        self._presigner = (
            _client(public_endpoint_url, region) if public_endpoint_url else self.client
        )
        self._sign = _presigner(self._presigner)
        # Honour AWS_REQUEST_CHECKSUM_CALCULATION=when_required for stores without checksums.
        calculation = getattr(self.client.meta.config, "request_checksum_calculation", None)
        self.checksums = calculation != "when_required"

    @classmethod
    def from_url(cls, url: str) -> S3Storage:
        """`s3://bucket[/prefix][?endpoint_url=...&public_endpoint_url=...&region=...&part_size_mib=...]`."""
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ValueError("not an s3:// URL")
        if "@" in parts.netloc:
            # Never echo the URL: it may hold a secret.
            raise ValueError("S3 URLs must not carry credentials; use the AWS environment")
        params = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
        if unknown := set(params) - _URL_PARAMS:
            raise ValueError(f"unknown S3 URL parameters: {sorted(unknown)}")
        part_mib = params.get("part_size_mib")
        return cls(
            parts.netloc,
            parts.path.strip("/"),
            endpoint_url=params.get("endpoint_url") or None,
            public_endpoint_url=params.get("public_endpoint_url") or None,
            region=params.get("region") or None,
            part_size=int(part_mib) * MiB if part_mib else DEFAULT_PART_SIZE,
        )

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def stat(self, key: str) -> BlobStat | None:
        with _unavailable_on_error():
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as e:
                if _code(e) in _MISSING:
                    return None
                raise
        return BlobStat(size=head["ContentLength"])

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> BlobReader:
        if start < 0:
            raise ValueError(f"negative range start: {start}")
        if end is not None and end <= start:
            # S3 cannot express an empty range; still say whether the key exists.
            if self.stat(key) is None:
                raise FileNotFoundError(key)
            return _S3Reader(None)
        rng = f"bytes={start}-{'' if end is None else end - 1}"
        with _unavailable_on_error():
            try:
                if start == 0 and end is None:
                    resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                else:
                    resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=rng)
            except ClientError as e:
                if _code(e) in _MISSING:
                    raise FileNotFoundError(key) from e
                if _code(e) == "InvalidRange":  # start at or past the end
                    return _S3Reader(None)
                raise
        return _S3Reader(resp["Body"])

    def writer(self, key: str) -> BlobWriter:
        return _S3Writer(self, self._key(key))

    def delete(self, key: str) -> bool:
        # DeleteObject succeeds for absent keys too, so ask first (racy, advisory only).
        existed = self.stat(key) is not None
        with _unavailable_on_error():
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        return existed

    def probe_write(self, key: str) -> None:
        # The bucket first: some stores (SeaweedFS) create a missing bucket on PUT.
        with _unavailable_on_error():
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if _code(e) in ("404", "NoSuchBucket"):
                    raise BackendUnavailable(f"the bucket {self.bucket} does not exist") from e
                raise
        super().probe_write(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        keys = []
        with _unavailable_on_error():
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(base) :]
                    with contextlib.suppress(ValueError):  # foreign objects we cannot address
                        keys.append(check_key(key))
        # SeaweedFS lists directory by directory ("a/b" before "a-c"), not in byte order.
        yield from sorted(keys)

    def abort_stale_writes(self, started_before: datetime, *, dry_run: bool) -> int:
        """Multipart uploads under our prefix that a killed writer never completed nor
        aborted: invisible, but their parts take space. The store's own `Initiated` time
        is compared, so keep the grace far above any clock skew (it is hours)."""
        base = f"{self.prefix}/" if self.prefix else ""
        stale: list[tuple[str, str]] = []
        with _unavailable_on_error():
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=base
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < started_before:
                        stale.append((upload["Key"], upload["UploadId"]))
            if not dry_run:
                for key, upload_id in stale:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
        return len(stale)

    def presigned_url(
        self,
        key: str,
        *,
        method: str = "GET",
        expires: int = 300,
        filename: str | None = None,
    ) -> str:
        if method.upper() not in ("GET", "HEAD"):
            raise ValueError(f"cannot presign {method!r}; only GET and HEAD")
        if not 1 <= expires <= MAX_PRESIGN_EXPIRES:
            raise ValueError(f"presigned URL expiry must be 1..{MAX_PRESIGN_EXPIRES} seconds")
        params = {}
        if filename is not None:
            params["response-content-disposition"] = _content_disposition(filename)
        if self._sign is None:
            raise BackendUnavailable("S3 is unavailable (NoCredentialsError)")
        return self._sign.url(method.upper(), self.bucket, self._key(key), expires, params)

    def use_presign_identity(self, access_key_id: str, secret_access_key: str) -> None:
        # Same endpoint and region as before; only the signing identity changes. Reads,
        # writes and the readiness probe keep the client's own identity.
        region = self._presigner.meta.region_name or "us-east-1"
        identity = StaticCredentials(access_key_id, secret_access_key)
        self._sign = Presigner(self._presigner.meta.endpoint_url, region, identity)

    def close(self) -> None:
        self.client.close()
        if self._presigner is not self.client:
            self._presigner.close()


register("s3", S3Storage.from_url)
