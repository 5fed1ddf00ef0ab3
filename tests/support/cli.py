"""Running the real `tunevault` command against a store, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys

from tunevault.settings import Settings


def store_cli(settings: Settings, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """`tunevault ARGS` on the store of `settings`; asserts it succeeds (or fails, `ok=False`)."""
    done = subprocess.run(
        [sys.executable, "-m", "tunevault", *args],
        env={
            **os.environ,
            "TUNEVAULT_DATA_DIR": str(settings.data_dir),
            "TUNEVAULT_DATABASE_URL": str(settings.database_url),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode == 0) == ok, done.stderr
    return done
