"""`--extract`: streaming unpack equals `tar -I zstd -xf`, and unsafe archives are refused."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from tests.client.conftest import FAST, Live, MiB
from tests.client.origins import blob_host
from tests.client.test_cli import run
from tests.support.faultproxy import Fault, FaultProxy
from tunevault.archive.read import UnsafeArchive, unpack_stream
from tunevault.client import Client
from tunevault.client.extract import download_extract
from tunevault.errors import IntegrityError, InvalidRequest


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_extract_matches_tar_despite_cuts(
    live: Live, client: Client, proxy: FaultProxy, tmp_path: Path
) -> None:
    archive = tmp_path / "a.tar.zst"
    archive.write_bytes(live.data)
    expected = tmp_path / "by-tar"
    expected.mkdir()
    subprocess.run(["tar", "-I", "zstd", "-xf", str(archive), "-C", str(expected)], check=True)
    proxy.push(Fault(cut_after=3 * MiB + 1), Fault(cut_after=9 * MiB))
    dest = tmp_path / "work" / "model"
    result = download_extract(client, live.ft, dest, policy=FAST)
    assert tree(dest) == tree(expected)
    assert result.files == len(tree(expected)) - 1  # SHA256SUMS is not counted
    assert result.sha256 == live.sha256 and result.transferred == len(live.data)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model"]  # no temp dir left


def test_extract_skips_forward_when_range_is_ignored(
    live: Live, client: Client, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.default = Fault(strip_range=True)
    proxy.push(Fault(cut_after=2 * MiB))
    dest = tmp_path / "model"
    result = download_extract(client, live.ft, dest, policy=FAST)
    assert result.sha256 == live.sha256 and result.restarts == 0
    assert (dest / "config.json").stat().st_size == 700


def test_extract_corruption_leaves_nothing(
    live: Live, client: Client, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.push(Fault(corrupt_at=len(live.data) // 3))
    with pytest.raises(IntegrityError):
        download_extract(client, live.ft, tmp_path / "model", policy=FAST)
    assert list(tmp_path.iterdir()) == []


def test_extract_refuses_a_non_empty_destination(
    live: Live, client: Client, tmp_path: Path
) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InvalidRequest):
        download_extract(client, live.ft, tmp_path)
    assert tree(tmp_path) == {"keep.txt": b"mine"}


# Hand-made archives -------------------------------------------------------------------


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, kind, 0o644
    return info


SUMS_LAST = False  # where make_archive puts SHA256SUMS; the tests below run with both


def make_archive(members: list[tuple[tarfile.TarInfo, bytes]], sums: bytes | None = None) -> bytes:
    """A tar.zst with SHA256SUMS first, or last (SUMS_LAST), computed from the regular
    members unless given."""
    if sums is None:
        sums = b"".join(
            f"{hashlib.sha256(data).hexdigest()}  {info.name}\n".encode()
            for info, data in members
            if info.type == tarfile.REGTYPE
        )
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if not SUMS_LAST:
            tar.addfile(_info("SHA256SUMS", len(sums)), io.BytesIO(sums))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
        if SUMS_LAST:
            tar.addfile(_info("SHA256SUMS", len(sums)), io.BytesIO(sums))
    return zstandard.ZstdCompressor().compress(raw.getvalue())


def _link(name: str, kind: bytes, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = _info(name, 0, kind)
    info.linkname = target
    return info, b""


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, len(data)), data


UNSAFE: dict[str, Callable[[], bytes]] = {
    "absolute": lambda: make_archive([_file("/etc/evil")]),
    "dotdot": lambda: make_archive([_file("a/../../evil")]),
    "dot": lambda: make_archive([_file("./a")]),
    "symlink": lambda: make_archive([_link("l", tarfile.SYMTYPE, "/etc/passwd")]),
    "hardlink": lambda: make_archive([_file("a"), _link("h", tarfile.LNKTYPE, "a")]),
    "chardev": lambda: make_archive([(_info("dev", 0, tarfile.CHRTYPE), b"")]),
    "fifo": lambda: make_archive([(_info("pipe", 0, tarfile.FIFOTYPE), b"")]),
    "duplicate": lambda: make_archive(
        [_file("a", b"1"), _file("a", b"1")],
        sums=f"{hashlib.sha256(b'1').hexdigest()}  a\n".encode(),
    ),
    "file-under-file": lambda: make_archive([_file("a"), _file("a/b")]),
    "name-over-255-bytes": lambda: make_archive([_file("d/" + "x" * 256)]),
}
WRONG: dict[str, Callable[[], bytes]] = {
    "no-sums": lambda: zstandard.ZstdCompressor().compress(_plain_tar()),
    "sums-in-the-middle": lambda: _sums_between(_file("a"), _file("b")),
    "digest-mismatch": lambda: make_archive(
        [_file("a", b"good")], sums=f"{hashlib.sha256(b'bad').hexdigest()}  a\n".encode()
    ),
    "unlisted-file": lambda: make_archive([_file("a")], sums=b""),
    "listed-but-missing": lambda: make_archive(
        [_file("a")], sums=f"{'0' * 64}  b\n{hashlib.sha256(b'x').hexdigest()}  a\n".encode()
    ),
    "truncated": lambda: make_archive([_file("a", b"y" * 100_000)])[:-50],
    "trailing-garbage": lambda: make_archive([_file("a")]) + b"more",
}


def _sums_between(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    sums = b"".join(f"{hashlib.sha256(d).hexdigest()}  {i.name}\n".encode() for i, d in members)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(members[0][0], io.BytesIO(members[0][1]))
        tar.addfile(_info("SHA256SUMS", len(sums)), io.BytesIO(sums))
        tar.addfile(members[1][0], io.BytesIO(members[1][1]))
    return zstandard.ZstdCompressor().compress(raw.getvalue())


@pytest.fixture(params=["sums-first", "sums-last"])
def sums_at(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys.modules[__name__], "SUMS_LAST", request.param == "sums-last")
    return str(request.param)


def _plain_tar() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(_info("a", 1), io.BytesIO(b"x"))
    return raw.getvalue()


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_members_are_refused(case: str, sums_at: str, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchive):
        unpack_stream(io.BytesIO(UNSAFE[case]()), dest)
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(dest)]
    assert outside == [] and not any(p.is_symlink() for p in dest.rglob("*"))


@pytest.mark.parametrize("case", sorted(WRONG))
def test_unverifiable_archives_are_refused(case: str, sums_at: str, tmp_path: Path) -> None:
    with pytest.raises(IntegrityError):
        unpack_stream(io.BytesIO(WRONG[case]()), tmp_path)


def test_nested_paths_and_directory_members_are_fine(sums_at: str, tmp_path: Path) -> None:
    data = make_archive([(_info("sub", 0, tarfile.DIRTYPE), b""), _file("sub/deep/f", b"ok")])
    result = unpack_stream(io.BytesIO(data), tmp_path)
    assert result.files == {"sub/deep/f": hashlib.sha256(b"ok").hexdigest()}
    assert (tmp_path / "sub" / "deep" / "f").read_bytes() == b"ok"


def test_cli_extract_of_a_stored_name_over_255_bytes_is_a_clear_error(tmp_path: Path) -> None:
    # Archives stored before publishing refused such names still exist: the CLI must say
    # why it cannot extract, not die in open() with ENAMETOOLONG.
    data = make_archive([_file("ok.json"), _file("d/" + "x" * 300)])
    with blob_host(data) as host:
        r = run("download", "ft-x", "--extract", str(tmp_path / "out"), url=host.url, token="k")
    assert r.returncode == 5, (r.stdout, r.stderr)
    assert r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr
    assert "longer than 255 bytes" in r.stderr and "without --extract" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("umask", "dirs", "files"), [(0o022, 0o755, 0o644), (0o002, 0o775, 0o664)])
def test_extracted_tree_follows_the_umask(
    live: Live, tmp_path: Path, umask: int, dirs: int, files: int
) -> None:
    dest = tmp_path / "model"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNEVAULT_", "TOGETHER_"))}
    env |= {"TUNEVAULT_URL": live.url, "TUNEVAULT_API_KEY": live.seeded.token}
    subprocess.run(
        [sys.executable, "-m", "tunevault", "download", live.ft, "--extract", str(dest)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
        preexec_fn=lambda: os.umask(umask),  # a fresh child, no threads yet
    )
    modes = {
        p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")
    }
    assert modes["model"] == dirs and modes["model/tokenizer"] == dirs
    assert {m for p, m in modes.items() if (tmp_path / p).is_file()} == {files}
