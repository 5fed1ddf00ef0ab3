"""The merge job's streamed pipeline (base read once where it lies, the merged shards
packed as they are computed, `SHA256SUMS` last) against merging to a directory and packing
the files, on local disk and SeaweedFS; the two-pass rebuild of an archive built with
`SHA256SUMS` first; merged files stored as blobs only when asked; and the bounded base
cache of object storage."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xxhash
import zstandard

from tests.support.seaweed import SeaweedFS
from tunevault.archive.read import unpack_stream
from tunevault.archive.write import write_archive
from tunevault.errors import IntegrityError, MergeRefused
from tunevault.layout import blob_key, scratch_dir
from tunevault.merge import (
    OutputFile,
    Prepared,
    merge_lora,
    merged_digests,
    prepare,
    shard_sizes,
    side_outputs,
)
from tunevault.models import ArchiveFormat, FileEntry, FineTune, JobKind, Kind
from tunevault.service.basecache import BaseCache
from tunevault.service.builds import LocalCopy, archive_key_of, build_archive
from tunevault.service.context import Services, open_services
from tunevault.service.demo import TinyLlama, base_weights, write_adapter, write_model
from tunevault.service.mergestream import ShardStream, StreamedShards
from tunevault.service.publishing import publish_directory, put_directory, register_base_model
from tunevault.service.worker import Worker
from tunevault.settings import Settings

SPEC = TinyLlama(vocab=128, hidden=64, intermediate=160, layers=2)
BASE = "acme/base"


@pytest.fixture
def settings(settings_on_each_storage: Settings) -> Settings:
    return settings_on_each_storage


def _base(svc: Services, org_id: str, tmp: Path, seed: int = 0, name: str = BASE) -> Path:
    base_dir = write_model(
        tmp / f"base-{seed}", SPEC, base_weights(SPEC, np.random.default_rng(seed))
    )
    register_base_model(svc, org_id, name, put_directory(svc.store, svc.storage, org_id, base_dir))
    return base_dir


def _merged_lora(svc: Services, org_id: str, tmp: Path, n: int, base: str = BASE) -> FineTune:
    """A LoRA fine-tune whose final adapter is committed and merged by the worker."""
    ft = svc.store.create_fine_tune(
        org_id,
        model=base,
        model_output_name=f"acme/lora-{n}",
        training_type="Lora",
        status="running",
    )
    adapter = write_adapter(tmp / f"adapter-{n}", SPEC, np.random.default_rng(100 + n))
    publish_directory(svc, ft, adapter, step=1, kind=Kind.ADAPTER, final=True)
    worker = Worker(svc)
    while worker.run_once():
        pass
    return ft


def _packed_from_files(
    svc: Services, org_id: str, base_dir: Path, adapter: Path, tmp: Path
) -> tuple[bytes, tuple[FileEntry, ...]]:
    """The slow way: merge to a directory, store every file as a blob, pack the blobs
    (`SHA256SUMS` last, as merged archives are)."""
    merge_lora(base_dir, adapter, tmp / "slow-merged")
    files = put_directory(svc.store, svc.storage, org_id, tmp / "slow-merged")
    sink = io.BytesIO()
    open_blob = lambda f: svc.storage.open_read(blob_key(f.sha256))  # noqa: E731
    write_archive(files, open_blob, sink, fmt=ArchiveFormat.SUMS_LAST)
    return sink.getvalue(), tuple(files)


def _members(data: bytes) -> list[str]:
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        return tar.getnames()


def test_the_streamed_merge_archives_the_bytes_of_packing_the_merged_files(
    settings: Settings, tmp_path: Path
) -> None:
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        base_dir = _base(svc, org.id, tmp_path)
        ft = _merged_lora(svc, org.id, tmp_path, 1)
        merged = svc.store.find_checkpoint(ft.id, 1, Kind.MERGED)
        assert merged is not None and merged.files
        archive = svc.store.get_archive(merged.id)
        assert archive is not None and archive.format == ArchiveFormat.SUMS_LAST
        data = b"".join(svc.storage.iter_range(archive.storage_key))
        assert hashlib.sha256(data).hexdigest() == archive.sha256
        slow, files = _packed_from_files(svc, org.id, base_dir, tmp_path / "adapter-1", tmp_path)
        assert data == slow
        # The manifest recorded after packing is the files' own (the Hub serves it).
        assert set(merged.files) == set(files)
        assert {f.path for f in merged.files} >= {"config.json", "model.safetensors"}
        names = _members(data)
        assert names[-1] == "SHA256SUMS" and sorted(names[:-1]) == names[:-1]
        # tunevault's reader and tar + sha256sum both check it.
        (tmp_path / "x").mkdir()
        got = unpack_stream(io.BytesIO(data), tmp_path / "x")
        assert got.files == {f.path: f.sha256 for f in merged.files}
        (tmp_path / "a.tar.zst").write_bytes(data)
        (tmp_path / "t").mkdir()
        subprocess.run(["tar", "-I", "zstd", "-xf", "../a.tar.zst"], cwd=tmp_path / "t", check=True)
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=tmp_path / "t", check=True)
        assert list(scratch_dir(settings.data_dir).iterdir()) == []  # nothing left behind


def test_merged_files_become_blobs_only_when_asked(settings: Settings, tmp_path: Path) -> None:
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        _base(svc, org.id, tmp_path)
        ft = _merged_lora(svc, org.id, tmp_path, 1)
        merged = svc.store.find_checkpoint(ft.id, 1, Kind.MERGED)
        assert merged is not None
        shard = next(f for f in merged.files if f.path == "model.safetensors")
        # The manifest is recorded, the shard itself was only ever streamed into the archive.
        assert svc.storage.stat(blob_key(shard.sha256)) is None
        assert shard.sha256 not in svc.store.org_blob_sizes(org.id, [shard.sha256])
        svc.store.queue_rebuild(merged.id, JobKind.MERGE_FILES)
        worker = Worker(svc)
        while worker.run_once():
            pass
        (job,) = [j for j in svc.store.jobs_for_checkpoint(merged.id) if j.kind == "merge_files"]
        assert job.state == "done", job
        for f in merged.files:
            blob = b"".join(svc.storage.iter_range(blob_key(f.sha256)))
            assert (len(blob), hashlib.sha256(blob).hexdigest()) == (f.size, f.sha256)
        assert set(svc.store.org_blob_sizes(org.id, [f.sha256 for f in merged.files])) == {
            f.sha256 for f in merged.files
        }
        again = svc.store.find_checkpoint(ft.id, 1, Kind.MERGED)
        assert again is not None and again.files == merged.files
        assert list(scratch_dir(settings.data_dir).iterdir()) == []


def test_consecutive_merges_on_s3_fetch_the_base_once(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seaweedfs.patch_env(monkeypatch)
    with seaweedfs.bucket() as bucket:
        settings = Settings(data_dir=tmp_path / "data", storage_url=seaweedfs.storage_url(bucket))
        with open_services(settings) as svc:
            org = svc.store.create_org("acme")
            _base(svc, org.id, tmp_path)
            first = _merged_lora(svc, org.id, tmp_path, 1)
            base = svc.store.get_base_model(org.id, BASE)
            assert base is not None
            cache = settings.resolved_base_cache_dir() / "sha256"
            assert {p.name for p in cache.iterdir()} == {f.sha256 for f in base.files}
            # Take the base out of the bucket: the next merge can only succeed by fetching
            # none of it.
            for f in base.files:
                assert svc.storage.delete(blob_key(f.sha256))
            second = _merged_lora(svc, org.id, tmp_path, 2)
            for ft in (first, second):
                ckpt = svc.store.find_checkpoint(ft.id, 1, Kind.MERGED)
                assert ckpt is not None and svc.store.get_archive(ckpt.id) is not None


def _stored(
    svc: Services, org_id: str, tmp: Path, sizes: dict[str, int], seed: int
) -> tuple[FileEntry, ...]:
    src = tmp / f"src-{seed}"
    src.mkdir()
    rng = np.random.default_rng(seed)
    for name, size in sizes.items():
        (src / name).write_bytes(rng.bytes(size))
    return tuple(put_directory(svc.store, svc.storage, org_id, src))


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_base_cache_is_lru_within_its_budget_and_shared_safely(
    settings: Settings, tmp_path: Path
) -> None:
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        a = _stored(svc, org.id, tmp_path, {"a1.bin": 300_000, "a2.bin": 200_000}, 1)
        b = _stored(svc, org.id, tmp_path, {"b1.bin": 400_000}, 2)
        cache = BaseCache(tmp_path / "cache", budget_bytes=800_000)
        # Four workers want base a at once: each file fetched once, four complete copies.
        fetched: list[int] = []
        outs = [tmp_path / f"w{i}" for i in range(4)]
        threads = [
            threading.Thread(
                target=lambda o=o: fetched.append(cache.materialize(svc.storage, a, o))
            )
            for o in outs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(fetched) == 4 and sum(fetched) == 500_000
        want_a = {f.path: f.sha256 for f in a}
        assert all(_tree(o) == want_a for o in outs)
        assert cache.materialize(svc.storage, a, tmp_path / "again") == 0
        # b does not fit beside a: a's least recently used file (a1, used before a2) goes,
        # which is enough; the budget holds.
        assert cache.materialize(svc.storage, b, tmp_path / "b") == 400_000
        assert cache.used_bytes() <= 800_000
        assert cache.materialize(svc.storage, b, tmp_path / "b2") == 0
        assert cache.materialize(svc.storage, a, tmp_path / "a3") == 300_000
        assert cache.used_bytes() <= 800_000
        # The copies linked before the eviction still hold every byte.
        assert all(_tree(o) == want_a for o in outs)
        # Bigger than the whole budget: fetched every time, never cached.
        small = BaseCache(tmp_path / "small", budget_bytes=100_000)
        assert small.materialize(svc.storage, b, tmp_path / "s1") == 400_000
        assert small.materialize(svc.storage, b, tmp_path / "s2") == 400_000
        assert small.used_bytes() == 0


def test_a_corrupt_base_blob_is_refused_and_not_cached(settings: Settings, tmp_path: Path) -> None:
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        (entry,) = _stored(svc, org.id, tmp_path, {"w.bin": 50_000}, 3)
        svc.storage.put(blob_key(entry.sha256), b"rotten" * 1000)
        cache = BaseCache(tmp_path / "cache", budget_bytes=1 << 20)
        with pytest.raises(IntegrityError, match="push the base model again"):
            cache.materialize(svc.storage, (entry,), tmp_path / "out")
        assert cache.used_bytes() == 0
        assert not (tmp_path / "out" / "w.bin").exists()
        assert list((tmp_path / "cache" / ".tmp").iterdir()) == []


def _prepared(tmp: Path) -> tuple[Prepared, tuple[OutputFile, ...], Path]:
    base_dir = write_model(tmp / "base", SPEC, base_weights(SPEC, np.random.default_rng(0)))
    adapter = write_adapter(tmp / "adapter", SPEC, np.random.default_rng(7))
    prepared = prepare(base_dir, adapter, max_shard_bytes=40_000)  # several shards
    return prepared, merged_digests(prepared, tmp / "side"), base_dir


def test_pass_two_streams_the_bytes_pass_one_hashed(tmp_path: Path) -> None:
    prepared, outputs, base_dir = _prepared(tmp_path)
    assert len(prepared.shards) > 2
    merge_lora(base_dir, tmp_path / "adapter", tmp_path / "files", max_shard_bytes=40_000)
    sizes = {o.path: o.size for o in outputs}
    with StreamedShards(prepared, sizes) as shards:
        for name, open_shard in shards.openers().items():  # name order, as the archive reads
            with open_shard() as f:
                data = f.read()
            assert data == (tmp_path / "files" / name).read_bytes()
    by_path = {o.path: o for o in outputs}
    for p in (tmp_path / "files").iterdir():
        assert by_path[p.name].sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert set(by_path) == {p.name for p in (tmp_path / "files").iterdir()}


def test_a_slow_reader_gets_every_byte_while_the_buffers_are_reused(tmp_path: Path) -> None:
    """The producer refills a buffer only once the reader has moved past it: read in odd
    small pieces (a reader holding each buffer long), the shards are still the files."""
    prepared, outputs, base_dir = _prepared(tmp_path)
    merge_lora(base_dir, tmp_path / "adapter", tmp_path / "files", max_shard_bytes=40_000)
    stream = ShardStream(prepared)
    try:
        for name in prepared.shards:
            size = next(o.size for o in outputs if o.path == name)
            shard, piece = bytearray(), memoryview(bytearray(997))
            with stream.open(size) as f:
                while n := f.readinto(piece):
                    shard += piece[:n]
                    time.sleep(0.001)  # lets the producer run while a buffer is being read
            assert shard == (tmp_path / "files" / name).read_bytes()
    finally:
        stream.close()


def test_a_merge_failing_in_pass_two_stores_no_archive(settings: Settings, tmp_path: Path) -> None:
    prepared, outputs, base_dir = _prepared(tmp_path)
    # The base loses its tail between the passes: the producer thread fails mid-stream.
    shard = base_dir / "model.safetensors"
    with shard.open("r+b") as f:
        f.truncate(shard.stat().st_size - 1000)
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        ft = svc.store.create_fine_tune(
            org.id, model=BASE, model_output_name="acme/lora", training_type="Lora"
        )
        files = [FileEntry(o.path, o.size, o.sha256) for o in outputs]
        ckpt = svc.store.add_checkpoint(ft.id, 1, Kind.MERGED, True, files)
        xxh3 = {o.sha256: o.xxh3 for o in outputs}
        with StreamedShards(prepared, {o.path: o.size for o in outputs}) as shards:
            copy = LocalCopy(tmp_path / "side", xxh3, shards.openers())
            with pytest.raises(MergeRefused, match="truncated"):
                build_archive(svc.store, svc.storage, ckpt, local=copy)
        assert svc.store.get_archive(ckpt.id) is None
        assert svc.storage.stat(archive_key_of(ckpt.files, 3)) is None
        assert not [t for t in threading.enumerate() if t.name == "tunevault-merge-stream"]


def test_a_one_pass_merge_failing_midway_records_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    base_dir = write_model(tmp_path / "base", SPEC, base_weights(SPEC, np.random.default_rng(0)))
    adapter = write_adapter(tmp_path / "adapter", SPEC, np.random.default_rng(7))
    prepared = prepare(base_dir, adapter, max_shard_bytes=40_000)
    sides = side_outputs(prepared, tmp_path / "side")
    shard = base_dir / "model.safetensors"
    with shard.open("r+b") as f:  # the producer thread fails in the middle of the stream
        f.truncate(shard.stat().st_size - 1000)
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        ft = svc.store.create_fine_tune(
            org.id, model=BASE, model_output_name="acme/lora", training_type="Lora"
        )
        ckpt = svc.store.add_checkpoint(ft.id, 1, Kind.MERGED, True, [])
        sizes = shard_sizes(prepared)
        files = [FileEntry(o.path, o.size, o.sha256) for o in sides]
        files += [FileEntry(name, size, "") for name, size in sizes.items()]
        key = "archives/one-pass.tar.zst"
        with StreamedShards(prepared, sizes) as shards:
            copy = LocalCopy(tmp_path / "side", {o.sha256: o.xxh3 for o in sides}, shards.openers())
            with pytest.raises(MergeRefused, match="truncated"):
                build_archive(
                    svc.store,
                    svc.storage,
                    dataclasses.replace(ckpt, files=tuple(files)),
                    local=copy,
                    fmt=ArchiveFormat.SUMS_LAST,
                    key=key,
                )
        assert svc.store.get_archive(ckpt.id) is None
        assert svc.storage.stat(key) is None
        again = svc.store.get_checkpoint(ckpt.id)
        assert again is not None and again.files == ()
        assert not [t for t in threading.enumerate() if t.name == "tunevault-merge-stream"]


def test_a_reader_that_stops_early_stops_the_producer(tmp_path: Path) -> None:
    prepared, outputs, _ = _prepared(tmp_path)
    sizes = {o.path: o.size for o in outputs}
    stream = ShardStream(prepared)
    try:
        first = stream.open(sizes[prepared.shards[0]])
        assert len(first.read(1000)) == 1000
    finally:
        stream.close()  # a failed build: the merge thread must not stay blocked on the queue
    assert not [t for t in threading.enumerate() if t.name == "tunevault-merge-stream"]


def test_shards_bytes_that_differ_from_pass_one_fail_the_build(
    settings: Settings, tmp_path: Path
) -> None:
    with open_services(settings) as svc:
        org = svc.store.create_org("acme")
        ft = svc.store.create_fine_tune(
            org.id, model=BASE, model_output_name="acme/lora", training_type="Lora"
        )
        good = np.random.default_rng(5).bytes(3 << 20)
        entry = FileEntry("model.safetensors", len(good), hashlib.sha256(good).hexdigest())
        ckpt = svc.store.add_checkpoint(ft.id, 1, Kind.MERGED, True, [entry])
        xxh3 = {entry.sha256: xxhash.xxh3_128(good).hexdigest()}
        bad = good[:-1] + b"!"
        copy = LocalCopy(tmp_path, xxh3, {entry.path: lambda: io.BytesIO(bad)})
        with pytest.raises(IntegrityError, match="does not match"):
            build_archive(svc.store, svc.storage, ckpt, local=copy)
        assert svc.store.get_archive(ckpt.id) is None
        assert svc.storage.stat(archive_key_of(ckpt.files, 3)) is None
