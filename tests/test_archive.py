"""The deterministic tar.zst writer, checked with the real tar and zstd tools."""

from __future__ import annotations

import hashlib
import io
import os
import random
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
import xxhash
import zstandard
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tunevault.archive.write import MTIME, SUMS_NAME, write_archive
from tunevault.errors import IntegrityError
from tunevault.models import ArchiveFormat, FileEntry


def entry(path: str, data: bytes) -> FileEntry:
    return FileEntry(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def build(files: dict[str, bytes], **kw: int | ArchiveFormat) -> bytes:
    out = io.BytesIO()
    result = write_archive(
        [entry(p, d) for p, d in files.items()], lambda e: io.BytesIO(files[e.path]), out, **kw
    )
    data = out.getvalue()
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    return data


def members(archive: bytes) -> list[tarfile.TarInfo]:
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive)).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return tar.getmembers()


def contents(archive: bytes) -> dict[str, bytes]:
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive)).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


FILES = {
    "model.safetensors": bytes(range(256)) * 4000,
    "config.json": b'{"model_type": "llama"}\n',
    "tokenizer/vocab.txt": b"a\nb\n",
    "empty.bin": b"",
}


def test_same_files_give_the_same_bytes_in_any_order() -> None:
    a = build(FILES)
    b = build(dict(reversed(list(FILES.items()))))
    assert a == b


def test_layout_sums_first_sorted_fixed_metadata() -> None:
    infos = members(build(FILES))
    assert [m.name for m in infos] == [SUMS_NAME, *sorted(FILES)]
    for m in infos:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (MTIME, 0, 0, "", "", 0o644)
        assert m.isreg()


def test_sums_last_takes_the_digests_of_files_made_as_they_are_packed(tmp_path: Path) -> None:
    made = {"model.safetensors"}  # made as it is read: its sha256 unknown until packed
    files = [FileEntry(p, len(d), "") if p in made else entry(p, d) for p, d in FILES.items()]
    out = io.BytesIO()
    result = write_archive(
        files, lambda e: io.BytesIO(FILES[e.path]), out, fmt=ArchiveFormat.SUMS_LAST
    )
    assert set(result.files) == {entry(p, d) for p, d in FILES.items()}
    infos = members(out.getvalue())
    assert [m.name for m in infos] == [*sorted(FILES), SUMS_NAME]
    # Every digest known beforehand: the same bytes.
    assert build(FILES, fmt=ArchiveFormat.SUMS_LAST) == out.getvalue()
    archive = tmp_path / "a.tar.zst"
    archive.write_bytes(out.getvalue())
    subprocess.run(["tar", "-I", "zstd", "-xf", str(archive), "-C", str(tmp_path)], check=True)
    subprocess.run(["sha256sum", "--strict", "-c", SUMS_NAME], cwd=tmp_path, check=True)
    with pytest.raises(ValueError, match="first needs every file's sha256"):
        write_archive(files, lambda e: io.BytesIO(FILES[e.path]), io.BytesIO())


def test_real_tar_extracts_and_sha256sum_verifies(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.zst"
    archive.write_bytes(build(FILES))
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-I", "zstd", "-xf", str(archive), "-C", str(out)], check=True)
    subprocess.run(
        ["sha256sum", "--strict", "-c", SUMS_NAME], cwd=out, check=True, capture_output=True
    )
    for name, data in FILES.items():
        assert (out / name).read_bytes() == data


def test_level_changes_the_bytes_not_the_content() -> None:
    fast, default = build(FILES, level=1), build(FILES, level=3)
    assert fast != default
    assert [m.name for m in members(fast)] == [m.name for m in members(default)]
    assert contents(fast) == contents(default)


@pytest.mark.parametrize("recorded", ["sha256 only", "xxh3"])
@pytest.mark.parametrize("damage", ["flip", "short", "long"])
def test_a_corrupt_blob_fails_the_build(damage: str, recorded: str) -> None:
    good = b"x" * 10000
    bad = {"flip": b"y" + good[1:], "short": good[:-1], "long": good + b"!"}[damage]
    e = entry("w.bin", good)
    xxh3 = {e.sha256: xxhash.xxh3_128_hexdigest(good)} if recorded == "xxh3" else None
    with pytest.raises(IntegrityError, match=r"w\.bin"):
        write_archive([e], lambda _: io.BytesIO(bad), io.BytesIO(), xxh3=xxh3)


@pytest.mark.parametrize(
    ("made", "said"), [(b"x" * 9999, "9999 bytes"), (b"x" * 10001, "over 10000 bytes")]
)
def test_a_made_file_of_the_wrong_size_fails_the_build_as_the_makers_fault(
    made: bytes, said: str
) -> None:
    """A streamed merge's shard has no stored blob: re-pushing would not help."""
    e = FileEntry("model.safetensors", 10000, "")
    with pytest.raises(IntegrityError, match=f"made {said} long where its plan said 10000"):
        write_archive([e], lambda _: io.BytesIO(made), io.BytesIO(), fmt=ArchiveFormat.SUMS_LAST)


def test_a_recorded_xxh3_is_what_the_bytes_are_checked_against() -> None:
    e = entry("w.bin", b"weights")
    ok = write_archive([e], lambda _: io.BytesIO(b"weights"), io.BytesIO(), xxh3=None)
    same = write_archive(
        [e],
        lambda _: io.BytesIO(b"weights"),
        io.BytesIO(),
        xxh3={e.sha256: xxhash.xxh3_128_hexdigest(b"weights")},
    )
    assert same == ok  # the check changes nothing in the archive
    with pytest.raises(IntegrityError):
        write_archive(
            [e], lambda _: io.BytesIO(b"weights"), io.BytesIO(), xxh3={e.sha256: "0" * 32}
        )


class _FailingSink:
    """Storage that fails after a few writes, like a disk that fills up."""

    def __init__(self, fail_after: int) -> None:
        self.left = fail_after

    def write(self, data: bytes | memoryview) -> int:
        if self.left == 0:
            raise OSError(28, "No space left on device")
        self.left -= 1
        return len(data)


def test_a_storage_failure_stops_the_build_with_its_cause() -> None:
    big = os.urandom(8 << 20)  # incompressible: many compressed chunks reach the sink
    before = threading.active_count()
    with pytest.raises(OSError, match="No space"):
        write_archive([entry("big.bin", big)], lambda _: io.BytesIO(big), _FailingSink(2))
    assert threading.active_count() == before  # the writer thread is gone, nothing leaks


def test_duplicate_or_reserved_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        build({SUMS_NAME: b"x"})
    e = entry("a", b"1")
    with pytest.raises(ValueError, match="unique"):
        write_archive([e, e], lambda _: io.BytesIO(b"1"), io.BytesIO())


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-é", min_size=1, max_size=120)


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    files=st.dictionaries(
        st.lists(names, min_size=1, max_size=3)
        .map("/".join)
        .filter(lambda p: all(part not in (".", "..") for part in p.split("/")) and p != SUMS_NAME),
        st.binary(max_size=3000),
        max_size=6,
    )
)
def test_any_file_set_roundtrips(files: dict[str, bytes]) -> None:
    # A path may not be both a file and a directory prefix of another file.
    assume(not any(p.startswith(q + "/") for p in files for q in files))
    archive = build(files)
    assert archive == build(files)
    got = contents(archive)
    sums = got.pop(SUMS_NAME).decode()
    assert got == files
    assert sums == "".join(f"{hashlib.sha256(files[p]).hexdigest()}  {p}\n" for p in sorted(files))


def test_the_bytes_of_a_multi_job_archive_are_pinned() -> None:
    """Evicted archives are rebuilt and must come back bit for bit, also after the writer
    is made faster: 24 MiB of input spans several of zstd's multi-threaded jobs, whose
    output depends on the job parameters (and not on the number of threads)."""

    def weights(n: int, seed: int) -> bytes:
        data = bytearray(2 * n)
        data[1::2] = random.Random(seed).randbytes(n)  # compressible like bf16: half random
        return bytes(data)

    files = {"a.safetensors": weights(7 << 20, 1), "b.safetensors": weights(5 << 20, 2)}
    files["c.json"] = b"{}\n"
    for threads in (-1, 1, 3):
        digest = hashlib.sha256(build(files, threads=threads)).hexdigest()
        assert digest == "12f001b5d6590a553d0aac44369be0be535981cec8ca3ec924ac31210f9a8a93"
