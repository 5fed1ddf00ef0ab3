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
