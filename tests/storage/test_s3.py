"""What only the S3 backend has: URL parsing, credentials, multipart details, presigning."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

import botocore.auth
import pytest

from tests.storage.conftest import PART_SIZE_MIB, s3_url
from tests.support.seaweed import SeaweedFS
from tunevault.metadata.base import now
from tunevault.storage import open_storage
from tunevault.storage.errors import BackendUnavailable
from tunevault.storage.s3 import MiB, S3Storage, _content_disposition
from tunevault.storage.sigv4 import Presigner

PART = PART_SIZE_MIB * MiB


@pytest.fixture
def s3(seaweedfs: SeaweedFS, s3_bucket: str) -> Iterator[S3Storage]:
    store = open_storage(s3_url(seaweedfs, s3_bucket, "pre/fix"))
    assert isinstance(store, S3Storage)
    try:
        yield store
    finally:
        store.close()


def test_from_url() -> None:
    url = "s3://bkt/some/prefix?endpoint_url=http://127.0.0.1:9&region=eu-west-1&part_size_mib=8"
    store = S3Storage.from_url(url)
    assert (store.bucket, store.prefix, store.part_size) == ("bkt", "some/prefix", 8 * MiB)
    assert store.client.meta.region_name == "eu-west-1"
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9"
    again = S3Storage.from_url(store.url)
    assert (again.bucket, again.prefix, again.part_size, again.url) == (
        "bkt",
        "some/prefix",
        8 * MiB,
        store.url,
    )
    assert S3Storage.from_url("s3://bkt").prefix == ""


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("s3://AKIAX:s3cr3t@bkt/x", "must not carry credentials"),
        ("s3://bkt/x?aws_secret_access_key=s3cr3t", "unknown S3 URL parameters"),
        ("s3://Bad_Bucket/x", "invalid S3 bucket"),
        ("s3://bkt:80/x", "invalid S3 bucket"),
        ("s3://bkt/../x", "invalid storage key"),
        ("s3://bkt/a//b", "invalid storage key"),
        ("s3://bkt/x?part_size_mib=1", "part size"),
    ],
)
def test_from_url_refuses(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        S3Storage.from_url(url)
    assert "s3cr3t" not in str(info.value)


def test_endpoint_and_region_from_the_aws_environment(s3_bucket: str) -> None:
    store = S3Storage.from_url(f"s3://{s3_bucket}/p")  # AWS_ENDPOINT_URL_S3, AWS_REGION
    store.put("k", b"via env")
    assert b"".join(store.iter_range("k")) == b"via env"
    store.close()


def test_keys_live_under_the_prefix(s3: S3Storage, seaweedfs: SeaweedFS) -> None:
    s3.put("a/b", b"x")
    admin = seaweedfs.admin
    listed = admin.list_objects_v2(Bucket=s3.bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["pre/fix/a/b"]


def test_list_ignores_foreign_objects(s3: S3Storage, seaweedfs: SeaweedFS) -> None:
    admin = seaweedfs.admin
    for key in ["pre/fix/ok", "pre/fix/dir/", "pre/fix/sp ace", "pre/fixed", "elsewhere"]:
        admin.put_object(Bucket=s3.bucket, Key=key, Body=b"x")
    assert list(s3.list()) == ["ok"]


def test_small_blob_is_one_put_large_is_multipart(s3: S3Storage, seaweedfs: SeaweedFS) -> None:
    s3.put("small", b"x" * (PART - 1))
    s3.put("large", b"x" * (2 * PART + 1))
    admin = seaweedfs.admin
    assert "-" not in admin.head_object(Bucket=s3.bucket, Key="pre/fix/small")["ETag"]
    assert admin.head_object(Bucket=s3.bucket, Key="pre/fix/large")["ETag"].endswith('-3"')


def test_no_multipart_upload_outlives_its_writer(s3: S3Storage, seaweedfs: SeaweedFS) -> None:
    aborted = s3.writer("aborted")
    aborted.write(b"x" * (PART + 1))
    aborted.abort()
    with pytest.raises(RuntimeError), s3.writer("failed") as w:
        w.write(b"x" * (PART + 1))
        raise RuntimeError
    s3.put("committed", b"x" * (PART + 1))
    uploads = seaweedfs.admin.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    assert uploads == []
    assert list(s3.list()) == ["committed"]


def test_finished_writer_refuses_more(s3: S3Storage) -> None:
    committed = s3.writer("a")
    committed.commit()
    with pytest.raises(ValueError, match="committed"):
        committed.write(b"x")
    aborted = s3.writer("b")
    aborted.abort()
    with pytest.raises(ValueError, match="aborted"):
        aborted.write(b"x")
    with pytest.raises(ValueError, match="aborted"):
        aborted.commit()
    assert list(s3.list()) == ["a"]


def test_multipart_without_checksums(
    seaweedfs: SeaweedFS, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The standard switch for S3-compatible stores that reject flexible checksums.
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    store = S3Storage.from_url(s3_url(seaweedfs, s3_bucket))
    assert not store.checksums
    data = bytes(range(256)) * (PART // 128 + 3)
    store.put("k", data)
    assert b"".join(store.iter_range("k")) == data
    store.close()


def test_presigned_url_is_sigv4_without_secrets(s3: S3Storage, seaweedfs: SeaweedFS) -> None:
    s3.put("k", b"0123456789")
    url = s3.presigned_url("k", expires=60)
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert seaweedfs.secret_key not in url
    assert seaweedfs.secret_key not in s3.url
    assert seaweedfs.access_key not in s3.url


def test_presigned_head_and_unicode_filename(s3: S3Storage) -> None:
    s3.put("k", b"0123456789")
    head = urllib.request.Request(s3.presigned_url("k", method="HEAD"), method="HEAD")
    with urllib.request.urlopen(head) as resp:
        assert resp.headers["Content-Length"] == "10"
    with urllib.request.urlopen(s3.presigned_url("k", filename='naïve "x".bin')) as resp:
        assert resp.headers["Content-Disposition"] == (
            "attachment; filename=\"na_ve _x_.bin\"; filename*=UTF-8''na%C3%AFve%20%22x%22.bin"
        )


def test_presigned_urls_can_name_a_public_endpoint(seaweedfs: SeaweedFS, s3_bucket: str) -> None:
    # The same store under another name, as a public hostname in front of an internal one.
    public = seaweedfs.endpoint_url.replace("127.0.0.1", "localhost")
    url = s3_url(seaweedfs, s3_bucket, "pub") + "&" + urlencode({"public_endpoint_url": public})
    store = open_storage(url)
    assert isinstance(store, S3Storage)
    try:
        store.put("k", b"abc")
        signed = store.presigned_url("k")
        assert signed.startswith(f"{public}/")
        with urllib.request.urlopen(signed) as resp:  # signed for the host it names
            assert resp.read() == b"abc"
        assert S3Storage.from_url(store.url).url == store.url
    finally:
        store.close()


@pytest.mark.parametrize(
    "kwargs",
    [{"method": "PUT"}, {"method": "DELETE"}, {"expires": 0}, {"expires": 8 * 24 * 3600}],
)
def test_presigned_url_refuses(s3: S3Storage, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        s3.presigned_url("k", **kwargs)  # type: ignore[arg-type]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> None:
    seaweedfs.patch_env(monkeypatch)
    store = S3Storage("bkt", endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(BackendUnavailable, match="EndpointConnectionError") as info:
        store.stat("k")
    assert "127.0.0.1" not in str(info.value)  # details stay in the chained exception
    with pytest.raises(BackendUnavailable):
        store.open_read("k")
    with pytest.raises(BackendUnavailable):
        store.put("k", b"x")
    with pytest.raises(BackendUnavailable):
        list(store.list())


def test_wrong_secret(
    seaweedfs: SeaweedFS, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = S3Storage.from_url(s3_url(seaweedfs, s3_bucket))
    with pytest.raises(BackendUnavailable, match="SignatureDoesNotMatch"):
        store.put("k", b"x")


def test_no_credentials(
    seaweedfs: SeaweedFS, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Storage.from_url(s3_url(seaweedfs, s3_bucket))
    with pytest.raises(BackendUnavailable, match="NoCredentialsError"):
        store.stat("k")
    with pytest.raises(BackendUnavailable, match="NoCredentialsError"):
        store.presigned_url("k")


def test_gc_aborts_multipart_uploads_of_dead_writers_only(
    s3: S3Storage, seaweedfs: SeaweedFS
) -> None:
    admin = seaweedfs.admin
    dead = s3.writer("archives/dead.tar.zst")
    dead.write(b"x" * (PART + 1))  # a part is stored, then the process "dies": no abort
    foreign = admin.create_multipart_upload(Bucket=s3.bucket, Key="elsewhere/x")["UploadId"]

    def pending() -> set[str]:
        uploads = admin.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
        return {u["Key"] for u in uploads}

    assert pending() == {"pre/fix/archives/dead.tar.zst", "elsewhere/x"}
    assert s3.abort_stale_writes(now() - timedelta(hours=1), dry_run=False) == 0  # too young
    later = now() + timedelta(minutes=1)
    assert s3.abort_stale_writes(later, dry_run=True) == 1
    assert pending() == {"pre/fix/archives/dead.tar.zst", "elsewhere/x"}
    assert s3.abort_stale_writes(later, dry_run=False) == 1
    assert pending() == {"elsewhere/x"}  # outside our prefix: not ours to abort
    admin.abort_multipart_upload(Bucket=s3.bucket, Key="elsewhere/x", UploadId=foreign)


@pytest.mark.parametrize(
    ("key", "method", "filename"),
    [
        ("k", "GET", None),
        ("archives/a.b-c_d/x.tar.zst", "GET", 'naïve "x".bin'),
        ("k", "HEAD", "m.bin"),
    ],
)
def test_presigned_url_is_the_one_botocore_signs(
    s3: S3Storage, monkeypatch: pytest.MonkeyPatch, key: str, method: str, filename: str | None
) -> None:
    # Our signer computes SigV4 itself; at the same instant it must give botocore's URL.
    when = datetime(2026, 5, 17, 12, 34, 56)
    ours = s3._sign
    assert ours is not None
    params = {"Bucket": s3.bucket, "Key": s3._key(key)}
    extra = {}
    if filename is not None:
        params["ResponseContentDisposition"] = _content_disposition(filename)
        extra["response-content-disposition"] = params["ResponseContentDisposition"]
    operation = "get_object" if method == "GET" else "head_object"
    with monkeypatch.context() as patch:  # botocore's clock, so that both sign one instant
        patch.setattr(botocore.auth, "get_current_datetime", lambda: when)
        theirs = s3.client.generate_presigned_url(
            operation, Params=params, ExpiresIn=77, HttpMethod=method
        )
    mine = ours.url(method, s3.bucket, s3._key(key), 77, extra, now=when.replace(tzinfo=UTC))
    split_mine, split_theirs = urlsplit(mine), urlsplit(theirs)
    assert split_mine._replace(query="") == split_theirs._replace(query="")
    assert sorted(parse_qsl(split_mine.query)) == sorted(parse_qsl(split_theirs.query))
    s3.put(key, b"abc")  # and the store accepts it
    with urllib.request.urlopen(
        urllib.request.Request(s3.presigned_url(key, method=method), method=method)
    ) as resp:
        assert resp.headers["Content-Length"] == "3"


def test_urls_kept_for_their_second_are_the_ones_signed_afresh(s3: S3Storage) -> None:
    # Within one second the signer answers from its memo: never another input's URL,
    # never a past second's.
    ours = s3._sign
    assert ours is not None
    when = datetime(2026, 5, 17, 12, 34, 56, tzinfo=UTC)
    inputs = [
        ("GET", "a", 77, {}),
        ("GET", "b", 77, {}),
        ("HEAD", "a", 77, {}),
        ("GET", "a", 78, {}),
        ("GET", "a", 77, {"response-content-disposition": "attachment"}),
    ]
    seen = set()
    for moment in (when, when.replace(microsecond=900_000), when + timedelta(seconds=1)):
        for method, key, expires, extra in inputs:
            fresh = Presigner(ours._origin + ours._path, ours._region, ours._credentials)
            url = ours.url(method, s3.bucket, key, expires, extra, now=moment)
            assert url == fresh.url(method, s3.bucket, key, expires, extra, now=moment)
            seen.add(url)
    assert len(seen) == 2 * len(inputs)  # the first two moments share one second
