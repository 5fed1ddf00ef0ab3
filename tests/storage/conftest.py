"""Storage fixtures: a session-wide SeaweedFS, and `storage` over every backend."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.support.seaweed import SeaweedFS
from tunevault.storage import Storage, open_storage
from tunevault.storage.local import LocalStorage

# The smallest part S3 allows, so multipart paths run with modest test data.
PART_SIZE_MIB = 5


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket, with the AWS environment pointing at SeaweedFS."""
    seaweedfs.patch_env(monkeypatch)
    with seaweedfs.bucket() as name:
        yield name


def s3_url(seaweedfs: SeaweedFS, bucket: str, prefix: str = "") -> str:
    query = {
        "endpoint_url": seaweedfs.endpoint_url,
        "region": seaweedfs.region,
        "part_size_mib": PART_SIZE_MIB,
    }
    return f"s3://{bucket}/{prefix}?{urlencode(query)}"


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Each backend, empty: local under tmp_path, s3 under a fresh bucket and prefix."""
    if request.param == "local":
        store: Storage = LocalStorage(tmp_path / "store")
    else:
        seaweedfs = request.getfixturevalue("seaweedfs")
        bucket = request.getfixturevalue("s3_bucket")
        store = open_storage(s3_url(seaweedfs, bucket, f"t-{secrets.token_hex(4)}"))
    try:
        yield store
    finally:
        store.close()
