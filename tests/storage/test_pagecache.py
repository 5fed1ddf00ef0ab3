"""Writes in page-cache steps land every byte where asked, whatever the step."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunevault.storage import pagecache


@pytest.mark.parametrize("step", [pagecache.STEP, 4097, 1 << 30])
def test_pwrite_all_lands_at_its_offset(tmp_path: Path, step: int) -> None:
    data = os.urandom(3 * pagecache.STEP + 123)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        pagecache.pwrite_all(fd, memoryview(data), 5000, step)
    finally:
        os.close(fd)
    written = (tmp_path / "f").read_bytes()
    assert written[:5000] == bytes(5000) and written[5000:] == data


def test_write_all_appends_every_byte(tmp_path: Path) -> None:
    first, second = os.urandom(pagecache.STEP + 1), os.urandom(2 * pagecache.STEP - 7)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        pagecache.write_all(fd, memoryview(first))
        pagecache.write_all(fd, memoryview(second))
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == first + second


class _Short:
    """A file object whose write stores at most 1000 bytes, as an unbuffered file may."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.largest = 0

    def write(self, b: memoryview) -> int:
        self.largest = max(self.largest, len(b))
        self.data += b[:1000]
        return min(len(b), 1000)


def test_write_file_stores_every_byte_in_steps_through_short_writes() -> None:
    data = os.urandom(3 * 4096 + 5)
    f = _Short()
    assert pagecache.write_file(f, data, step=4096) == len(data)  # type: ignore[arg-type]
    assert f.data == data and f.largest == 4096


def test_write_file_writes_a_buffered_file_whole(tmp_path: Path) -> None:
    data = os.urandom(2 * pagecache.LARGE + 1)
    with (tmp_path / "f").open("wb") as f:
        assert pagecache.write_file(f, memoryview(data)) == len(data)
    assert (tmp_path / "f").read_bytes() == data
