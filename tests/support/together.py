"""Running the official together CLI against a server, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TOGETHER_CLI = str(Path(sys.executable).with_name("together"))


def together_download(
    base_url: str, token: str, out: Path, *args: str, project: str | None = None
) -> Path:
    """`together fine-tuning download ARGS` run in `out` (created); returns the one file
    it saved. Run in a directory: its `-o DIR` saves under a random name."""
    out.mkdir()
    env = {
        **os.environ,
        "TOGETHER_BASE_URL": base_url,
        "TOGETHER_API_KEY": token,
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    env.pop("TOGETHER_PROJECT_ID", None)
    if project is not None:  # the CLI skips GET /v3/whoami when it knows the project
        env["TOGETHER_PROJECT_ID"] = project
    proc = subprocess.run(
        [TOGETHER_CLI, "fine-tuning", "download", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=out,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (saved,) = [p for p in out.rglob("*") if p.is_file()]
    return saved
