"""The storage contract, run against every backend (see the `storage` fixture).

A new backend joins by adding a parameter to that fixture; nothing here may know which
backend it is talking to. Capabilities may be missing, but then they raise `Unsupported`.
"""

from __future__ import annotations

import hashlib
import random
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.storage.conftest import PART_SIZE_MIB
from tunevault.storage import Storage, Unsupported
from tunevault.storage.local import LocalStorage
from tunevault.storage.s3 import S3Storage

MiB = 1 << 20
PART = PART_SIZE_MIB * MiB
# Below one part (a single PUT for S3) and across several parts (multipart upload).
SIZES = [pytest.param(1000, id="small"), pytest.param(2 * PART + 123, id="multipart")]


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def read_all(storage: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    with storage.open_read(key, start, end) as f:
        return f.read()


def test_put_stat_read_roundtrip(storage: Storage) -> None:
    data = data_of(4096)
    storage.put("blobs/sha256/ab/one", data)
    stat = storage.stat("blobs/sha256/ab/one")
    assert stat is not None
    assert stat.size == len(data)
    assert read_all(storage, "blobs/sha256/ab/one") == data
    assert b"".join(storage.iter_range("blobs/sha256/ab/one", chunk=1000)) == data


def test_empty_blob(storage: Storage) -> None:
    storage.put("empty", b"")
    stat = storage.stat("empty")
    assert stat is not None
    assert stat.size == 0
    assert read_all(storage, "empty") == b""
    assert list(storage.iter_range("empty")) == []


def test_missing_key(storage: Storage) -> None:
    assert storage.stat("nope") is None
    with pytest.raises(FileNotFoundError):
        storage.open_read("nope")
    with pytest.raises(FileNotFoundError):
        storage.open_read("nope", 5, 5)
    assert list(storage.list()) == []


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),
        (0, 1),
        (0, 1000),
        (10, 20),
        (500, None),
        (999, 1000),
        (999, None),
        (990, 5000),  # end past the size is clamped
        (1000, None),  # start at the size: empty
        (1000, 1000),
        (0, 0),  # empty ranges
        (500, 500),
        (600, 500),
        (2000, None),  # start past the size: empty
        (5000, 6000),
    ],
)
def test_ranged_read(storage: Storage, start: int, end: int | None) -> None:
    data = data_of(1000)
    storage.put("r", data)
    assert read_all(storage, "r", start, end) == data[start:end]
    assert b"".join(storage.iter_range("r", start, end, chunk=7)) == data[start:end]


def test_partial_reads_add_up(storage: Storage) -> None:
    data = data_of(1000)
    storage.put("r", data)
    with storage.open_read("r", 100, 900) as f:
        pieces = [f.read(300), f.read(300), f.read(300), f.read(300)]
    assert pieces[0] == data[100:400]
    assert pieces[1] == data[400:700]
    assert pieces[2] == data[700:900]
    assert pieces[3] == b""


def test_readinto_stays_within_the_range(storage: Storage) -> None:
    """Archive builds read through one reused buffer when the reader offers readinto."""
    data = data_of(1000)
    storage.put("r", data)
    buf = bytearray(300)
    with storage.open_read("r", 100, 900) as f:
        readinto = getattr(f, "readinto", None)
        if readinto is None:
            pytest.skip(f"{type(storage).__name__}'s reader has no readinto")
        got = []
        while n := readinto(buf):
            got.append(bytes(buf[:n]))
    assert [len(g) for g in got] == [300, 300, 200]
    assert b"".join(got) == data[100:900]


@pytest.mark.parametrize("size", SIZES)
def test_writer_invisible_until_commit(storage: Storage, size: int) -> None:
    data = data_of(size)
    w = storage.writer("pending/blob")
    w.write(data)
    assert w.size == size
    assert storage.stat("pending/blob") is None
    assert list(storage.list()) == []
    w.commit()
    w.commit()  # idempotent
    assert storage.stat("pending/blob") is not None
    assert list(storage.list()) == ["pending/blob"]
    assert hashlib.sha256(read_all(storage, "pending/blob")).digest() == (
        hashlib.sha256(data).digest()
    )


@pytest.mark.parametrize("size", SIZES)
def test_aborted_writer_leaves_nothing(storage: Storage, size: int) -> None:
    w = storage.writer("gone")
    w.write(data_of(size))
    w.abort()
    w.abort()  # idempotent
    assert storage.stat("gone") is None
    assert list(storage.list()) == []


@pytest.mark.parametrize("size", SIZES)
def test_failing_writer_leaves_nothing(storage: Storage, size: int) -> None:
    with pytest.raises(RuntimeError, match="producer failed"), storage.writer("gone") as w:
        w.write(data_of(size))
        raise RuntimeError("producer failed")
    assert storage.stat("gone") is None
    assert list(storage.list()) == []


@pytest.mark.parametrize("size", SIZES)
def test_overwrite_replaces_atomically(storage: Storage, size: int) -> None:
    old, new = data_of(500, seed=1), data_of(size, seed=2)
    storage.put("k", old)
    w = storage.writer("k")
    w.write(new)
    assert read_all(storage, "k") == old  # the old content stays whole until commit
    w.commit()
    assert read_all(storage, "k") == new
    stat = storage.stat("k")
    assert stat is not None
    assert stat.size == size
    assert list(storage.list()) == ["k"]


def test_aborted_overwrite_keeps_old(storage: Storage) -> None:
    storage.put("k", b"old")
    with pytest.raises(RuntimeError), storage.writer("k") as w:
        w.write(data_of(PART + 1))
        raise RuntimeError
    assert read_all(storage, "k") == b"old"


def test_adopt_file(storage: Storage, tmp_path: Path) -> None:
    data = data_of(PART + 1)
    source = tmp_path / "upload.part"
    source.write_bytes(data)
    storage.adopt_file("adopted", source)
    assert read_all(storage, "adopted") == data
    assert not source.exists()
    source.write_bytes(b"kept")
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.adopt_file("../escape", source)
    assert source.read_bytes() == b"kept"
    assert list(storage.list()) == ["adopted"]


def test_scratch_paths_do_not_outlive_their_writes(storage: Storage) -> None:
    # gc removes what `scratch_paths` lists once no live writer holds it.
    assert list(storage.scratch_paths()) == []
    with storage.writer("k") as w:
        w.write(data_of(1000))
        pending = list(storage.scratch_paths())
        # A backend that writes through local files must list them, and only real ones.
        assert len(pending) == (1 if isinstance(storage, LocalStorage) else 0)
        assert all(p.exists() for p in pending)
    with pytest.raises(RuntimeError), storage.writer("j") as w:
        w.write(data_of(1000))
        raise RuntimeError
    assert list(storage.scratch_paths()) == []


def test_delete(storage: Storage) -> None:
    storage.put("d/x", b"x")
    assert storage.delete("d/x") is True
    assert storage.delete("d/x") is False
    assert storage.stat("d/x") is None
    assert list(storage.list()) == []


def test_list_sorted_by_prefix(storage: Storage) -> None:
    keys = ["z/y/x", "a/b", "a-c", "a.d/x", "ab", "A", "a/b0", "blobs/sha256/00/f"]
    for key in keys:
        storage.put(key, key.encode())
    pending = storage.writer("a/pending")  # an open writer's temporary data is not a key
    pending.write(b"...")
    try:
        assert list(storage.list()) == sorted(keys)
        assert list(storage.list("a")) == ["a-c", "a.d/x", "a/b", "a/b0", "ab"]
        assert list(storage.list("a/")) == ["a/b", "a/b0"]
        assert list(storage.list("blobs/sha256/")) == ["blobs/sha256/00/f"]
        assert list(storage.list("nothing")) == []
    finally:
        pending.abort()


@pytest.mark.parametrize(
    "key", ["../x", "/abs", "a//b", "a/./b", "a/../b", "..", "", "a/", "sp ace", "x\n", "é"]
)
def test_invalid_keys_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.stat(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.open_read(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.writer(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.put(key, b"x")
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.delete(key)
    assert list(storage.list()) == []


def test_large_multipart_roundtrip(storage: Storage) -> None:
    size = 40 * MiB + 17
    # Uneven writes, so part boundaries fall inside them.
    lengths = [3, MiB - 1, 7 * MiB + 5, *[MiB] * 32]
    lengths.append(size - sum(lengths))
    expected = hashlib.sha256()
    with storage.writer("large") as w:
        for i, n in enumerate(lengths):
            chunk = data_of(n, seed=i)
            expected.update(chunk)
            assert w.write(memoryview(chunk)) == n
    assert w.size == size
    stat = storage.stat("large")
    assert stat is not None
    assert stat.size == size
    got = hashlib.sha256()
    for chunk in storage.iter_range("large", chunk=4 * MiB):
        got.update(chunk)
    assert got.hexdigest() == expected.hexdigest()
    # A range across the first part boundary.
    whole = read_all(storage, "large")
    assert read_all(storage, "large", PART - 10, PART + 10) == whole[PART - 10 : PART + 10]


def test_local_path_works_or_unsupported(storage: Storage) -> None:
    storage.put("p/q", b"payload")
    try:
        path = storage.local_path("p/q")
    except Unsupported:
        return
    assert Path(path).read_bytes() == b"payload"


def test_presigned_url_works_or_unsupported(storage: Storage) -> None:
    data = data_of(100)
    storage.put("p/q", data)
    try:
        url = storage.presigned_url("p/q", expires=60)
    except Unsupported:
        return
    with urllib.request.urlopen(url) as resp:
        assert resp.status == 200
        assert resp.read() == data
    ranged = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(ranged) as resp:
        assert resp.status == 206
        assert resp.read() == data[10:20]
    named = storage.presigned_url("p/q", filename="model.safetensors")
    with urllib.request.urlopen(named) as resp:
        assert resp.headers["Content-Disposition"] == 'attachment; filename="model.safetensors"'
        assert resp.read() == data


@settings(
    max_examples=40,
    deadline=None,  # network round trips vary
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one key, overwritten
)
@given(
    data=st.binary(max_size=3000),
    start=st.integers(min_value=0, max_value=3500),
    length=st.one_of(st.none(), st.integers(min_value=0, max_value=3500)),
)
def test_any_content_any_range(
    storage: Storage, data: bytes, start: int, length: int | None
) -> None:
    storage.put("prop", data)
    end = None if length is None else start + length
    assert read_all(storage, "prop", start, end) == data[start:end]


# Capabilities each backend must offer: a backend answering Unsupported to everything
# would pass the "works or unsupported" tests above, and serve nothing in its modes.
REQUIRED = {"LocalStorage": "local_path", "S3Storage": "presigned_url"}


def test_the_backend_offers_its_serving_capability(storage: Storage) -> None:
    storage.put("cap", b"x")
    capability = REQUIRED[type(storage).__name__]
    if capability == "local_path":
        assert Path(storage.local_path("cap")).read_bytes() == b"x"
    else:
        with urllib.request.urlopen(storage.presigned_url("cap", expires=60)) as resp:
            assert resp.read() == b"x"


def leftovers(storage: Storage) -> list[str]:
    """What the backend holds beyond its keys: stray files, incomplete uploads."""
    if isinstance(storage, LocalStorage):
        keys = {storage.root / k for k in storage.list()}
        files = [p for p in storage.root.rglob("*") if p.is_file() and p not in keys]
        return sorted(str(p) for p in files)
    assert isinstance(storage, S3Storage)
    uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket, Prefix=storage.prefix)
    return sorted(u["Key"] for u in uploads.get("Uploads", []))


def test_nothing_is_left_behind(storage: Storage, tmp_path: Path) -> None:
    big = data_of(2 * PART + 5)  # multipart on S3: parts exist before the commit
    with storage.writer("done") as w:
        w.write(big)
    with pytest.raises(RuntimeError), storage.writer("failed") as w:
        w.write(big)
        raise RuntimeError
    aborted = storage.writer("aborted")
    aborted.write(big)
    aborted.abort()
    source = tmp_path / "adopt-me"
    source.write_bytes(big)
    storage.adopt_file("adopted", source)
    storage.put("gone", b"x")
    storage.delete("gone")
    assert sorted(storage.list()) == ["adopted", "done"]
    assert leftovers(storage) == []
