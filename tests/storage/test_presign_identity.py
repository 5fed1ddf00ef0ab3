"""A read-only identity signs the redirect URLs (`s3_presign_*` settings), on a real
SeaweedFS whose s3.json gives that identity `Read` on one bucket and nothing else: the
URL shows its key id, the download through it works, and that identity cannot write."""

from __future__ import annotations

import hashlib
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode, urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from pydantic import ValidationError

from tests.client.seeding import add_fine_tune
from tests.support.seaweed import SeaweedFS, run_seaweedfs
from tests.support.server import run_server
from tunevault.models import Scope
from tunevault.service.context import open_services
from tunevault.settings import Settings
from tunevault.storage import open_storage

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

BUCKET = "presigned"  # the bucket the read-only identity's actions are scoped to
READER_KEY = "TVREADER" + secrets.token_hex(6).upper()
READER_SECRET = secrets.token_urlsafe(30)
READER = {
    "name": "tunevault-presign",
    "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
    "actions": [f"Read:{BUCKET}"],
}


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    tmp = tmp_path_factory.mktemp("seaweed-presign")
    with run_seaweedfs(tmp, identities=[READER]) as server:
        server.admin.create_bucket(Bucket=BUCKET)
        try:
            yield server
        finally:
            for obj in server.admin.list_objects_v2(Bucket=BUCKET).get("Contents", []):
                server.admin.delete_object(Bucket=BUCKET, Key=obj["Key"])
            server.delete_bucket(BUCKET)


def _storage_url(seaweed: SeaweedFS, prefix: str, **extra: str) -> str:
    query = {"endpoint_url": seaweed.endpoint_url, "region": seaweed.region, **extra}
    return f"s3://{BUCKET}/{prefix}?{urlencode(query)}"


def _key_id(url: str) -> str:
    [credential] = parse_qs(urlsplit(url).query)["X-Amz-Credential"]
    return credential.split("/", 1)[0]


def _reader(seaweed: SeaweedFS) -> S3Client:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=seaweed.endpoint_url,
        region_name=seaweed.region,
        aws_access_key_id=READER_KEY,
        aws_secret_access_key=READER_SECRET,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def test_the_read_only_identity_signs_and_cannot_write(
    seaweed: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    seaweed.patch_env(monkeypatch)  # the main identity: the AWS chain
    public = seaweed.endpoint_url.replace("127.0.0.1", "localhost")
    store = open_storage(_storage_url(seaweed, "unit", public_endpoint_url=public))
    try:
        store.put("k", b"0123456789")
        assert _key_id(store.presigned_url("k")) == seaweed.access_key  # before: the main one
        store.use_presign_identity(READER_KEY, READER_SECRET)
        url = store.presigned_url("k", filename="k.bin")
        assert _key_id(url) == READER_KEY and url.startswith(f"{public}/")
        assert READER_SECRET not in url
        with urllib.request.urlopen(url) as resp:
            assert resp.read() == b"0123456789"
        store.probe_write("readyz/unit")  # reads and writes keep the main identity
        store.put("k2", b"written by the main identity")
    finally:
        store.close()
    reader = _reader(seaweed)
    # Its key is valid (it reads), so the refusals below are about what it may do.
    assert reader.get_object(Bucket=BUCKET, Key="unit/k")["Body"].read() == b"0123456789"
    for call in (
        lambda: reader.put_object(Bucket=BUCKET, Key="unit/k", Body=b"overwritten"),
        lambda: reader.delete_object(Bucket=BUCKET, Key="unit/k"),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    kept = seaweed.admin.get_object(Bucket=BUCKET, Key="unit/k")["Body"].read()
    assert kept == b"0123456789"


def test_redirects_are_signed_by_the_read_only_identity(
    seaweed: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seaweed.patch_env(monkeypatch)  # seeding in this process uses the main identity
    settings = Settings(data_dir=tmp_path / "data", storage_url=_storage_url(seaweed, "e2e"))
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        _, token = svc.store.create_key(org.id, "ro", [Scope.READ])
    seeded = add_fine_tune(settings, token, {"model.safetensors": 2 << 20, "config.json": 300})
    env = {
        **seaweed.env(),
        "TUNEVAULT_STORAGE_URL": str(settings.storage_url),
        "TUNEVAULT_SERVE_MODE": "redirect",
        "TUNEVAULT_S3_PRESIGN_ACCESS_KEY_ID": READER_KEY,
        "TUNEVAULT_S3_PRESIGN_SECRET_ACCESS_KEY": READER_SECRET,
    }
    with run_server(settings.data_dir, env=env) as server:
        auth = {"Authorization": f"Bearer {token}"}
        # The probe writes with the main identity: the read-only one would be refused.
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        query = {"ft_id": seeded.ft.id, "checkpoint": "model_output_path"}
        answer = httpx.get(f"{server.url}/v1/finetune/download", params=query, headers=auth)
        assert answer.status_code == 307
        location = answer.headers["location"]
        assert _key_id(location) == READER_KEY
        body = httpx.get(location).raise_for_status().content
        assert hashlib.sha256(body).hexdigest() == seeded.archive.sha256
    logs = "".join(p.read_text() for p in settings.data_dir.glob("server-*.log"))
    assert '"route"' in logs  # the access log was written
    assert READER_SECRET not in logs


def test_the_settings_take_both_or_neither(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="both s3_presign_access_key_id"):
        Settings(data_dir=tmp_path, s3_presign_access_key_id=READER_KEY)
    settings = Settings(
        data_dir=tmp_path,
        s3_presign_access_key_id=READER_KEY,
        s3_presign_secret_access_key=READER_SECRET,
    )
    assert READER_SECRET not in repr(settings) and READER_SECRET not in str(settings)
    # Local storage has no presigned URLs: the identity would be silently unused.
    with pytest.raises(ValueError, match="storage is not S3"), open_services(settings):
        pass
