"""A small real disk, for tests of what happens when it fills up."""

from __future__ import annotations

import os
from pathlib import Path


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(disk: Path, leave: int) -> None:
    """Take all but `leave` bytes of the disk with a filler file."""
    with (disk / "filler").open("ab") as f:
        f.write(b"\0" * max(0, free_bytes(disk) - leave))
