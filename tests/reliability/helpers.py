"""What the reliability tests share: a publishing client, downloads, and the consistency
check every crash and gc test ends with."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import sqlalchemy as sa
import zstandard

from tests.support.publishing import commit, create_fine_tune, sha, upload
from tunevault.layout import blob_key
from tunevault.metadata import tables as t
from tunevault.models import Scope
from tunevault.service.context import open_services
from tunevault.settings import Settings


def make_key(settings: Settings, org: str = "rel") -> str:
    with open_services(settings) as svc:
        found = svc.store.get_org_by_name(org) or svc.store.create_org(org)
        return svc.store.create_key(found.id, "rw", [Scope.READ, Scope.PUBLISH])[1]


def publish(c: httpx.Client, files: dict[str, bytes], tries: int = 10) -> str:
    """Upload and commit, uploading again when a concurrent gc took a blob (grace 0)."""
    ft_id = create_fine_tune(c, "rel/out")
    for _ in range(tries):
        for data in files.values():
            upload(c, data)
        r = commit(c, ft_id, files)
        if r.status_code == 201:
            break
        assert r.json()["error"]["code"] == "invalid_manifest", r.text
    else:
        raise AssertionError(f"the manifest of {ft_id} never committed")
    r = c.post(f"/v1/publish/fine-tunes/{ft_id}/status", json={"status": "completed"})
    assert r.status_code == 200, r.text
    return ft_id


def download_query(ft_id: str) -> str:
    return f"/v1/finetune/download?ft_id={ft_id}&checkpoint=model_output_path"


def wait_archive(c: httpx.Client, ft_id: str, tries: int = 1200) -> bytes:
    """The archive, once built (polls `archive_not_ready`)."""
    for _ in range(tries):
        r = c.get(download_query(ft_id))
        if r.status_code == 200:
            return r.content
        assert r.status_code == 409 and r.json()["error"]["code"] == "archive_not_ready", r.text
        time.sleep(0.05)
    raise AssertionError(f"the archive of {ft_id} was never built")


def archive_members(data: bytes) -> dict[str, bytes]:
    out = {}
    with (
        zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as raw,
        tarfile.open(fileobj=raw, mode="r|") as tar,
    ):
        for m in tar:
            f = tar.extractfile(m)
            if f is not None:
                out[m.name] = f.read()
    return out


def wait_for(pred: Callable[[], bool], what: str, tries: int = 1200) -> None:
    for _ in range(tries):
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Inventory:
    blobs: set[str]
    archives: set[str]


def check_consistent(settings: Settings) -> Inventory:
    """Storage holds only complete objects, and no row points at a missing one.

    Every blob's bytes hash to its key; every archive with a row matches the row's digest
    and size; every file row, blob row and archive row names a stored object.
    """
    with open_services(settings) as svc:
        storage, engine = svc.storage, svc.store.engine
        keys = list(storage.list())
        blobs = {k.rsplit("/", 1)[1] for k in keys if k.startswith("blobs/")}
        archives = {k for k in keys if k.startswith("archives/")}
        assert set(keys) == {blob_key(b) for b in blobs} | archives, keys
        for b in blobs:
            assert sha(b"".join(storage.iter_range(blob_key(b)))) == b, f"blob {b} is corrupt"
        with engine.connect() as conn:
            named = _column(conn, t.checkpoint_files.c.sha256, t.base_model_files.c.sha256)
            recorded = _column(conn, t.blobs.c.sha256, t.org_blobs.c.sha256)
            rows = conn.execute(sa.select(t.archives)).all()
        assert named <= blobs, f"file rows name missing blobs: {named - blobs}"
        assert recorded <= blobs, f"blob rows without bytes: {recorded - blobs}"
        for row in rows:
            assert row.storage_key in archives, f"archive row without bytes: {row.storage_key}"
            data = b"".join(storage.iter_range(row.storage_key))
            assert (sha(data), len(data)) == (row.sha256, row.size), row.storage_key
        return Inventory(blobs=blobs, archives=archives)


def _column(conn: sa.Connection, *cols: sa.Column[str]) -> set[str]:
    found: set[str] = set()
    for col in cols:
        found.update(conn.execute(sa.select(col)).scalars())
    return found


def scratch_files(settings: Settings) -> list[str]:
    """Partial uploads and local-storage temp files under the data dir."""
    data = settings.data_dir
    tmp = data / "blobs" / ".tmp"
    found = [*(data / "uploads").glob("*/*.part"), *(tmp.iterdir() if tmp.exists() else ())]
    return sorted(str(p) for p in found)
