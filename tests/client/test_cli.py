"""The `tunevault` client commands as users run them: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.client.conftest import Live, MiB, leftovers
from tests.support.faultproxy import Fault, FaultProxy
from tunevault.client.state import PartFile
from tunevault.client.waiting import POLL_CAP


def run(
    *args: str, url: str, token: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TUNEVAULT_", "TOGETHER_"))}
    full_env = {**base, "TUNEVAULT_URL": url, "TUNEVAULT_API_KEY": token, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tunevault", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_download_json_result(live: Live, tmp_path: Path) -> None:
    r = run(
        "download", live.ft, "-o", str(tmp_path), "--json", url=live.url, token=live.seeded.token
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["path"] == str(tmp_path / live.filename)
    assert result["sha256"] == live.sha256 and result["verified"] is True
    assert result["size"] == len(live.data) and r.stderr == ""  # no bar when not a TTY
    assert leftovers(tmp_path) == []


def test_exit_codes(live: Live, proxy: FaultProxy, tmp_path: Path) -> None:
    token, out = live.seeded.token, str(tmp_path)
    cases = {
        "not found": (["download", "ft-00000000-0000", "-o", out], live.url, token, 4),
        "unauthorised": (["download", live.ft, "-o", out], live.url, "tv_wrong", 3),
        "bad FT:STEP": (["download", f"{live.ft}:abc"], live.url, token, 2),
        "-o and --extract": (
            ["download", live.ft, "-o", out, "--extract", out],
            live.url,
            token,
            2,
        ),
        "not ready": (["download", live.pending_ft, "-o", out, "--wait", "0"], live.url, token, 7),
        "network": (
            ["download", live.ft, "-o", out, "--retries", "1"],
            "http://127.0.0.1:9",
            token,
            6,
        ),
        "ls unauthorised": (["ls"], live.url, "tv_wrong", 3),
    }
    for name, (args, url, key, code) in cases.items():
        r = run(*args, url=url, token=key)
        assert r.returncode == code, (name, r.stdout, r.stderr)
        assert r.stderr.splitlines()[-1].startswith("error: "), (name, r.stderr)
    proxy.default = Fault(corrupt_at=MiB)
    r = run("download", live.ft, "-o", out, "--json", url=proxy.url, token=token)
    assert r.returncode == 5 and json.loads(r.stdout)["error"]["code"] == "integrity_error"
    assert list(tmp_path.iterdir()) == []


def test_ls_and_checkpoints(live: Live) -> None:
    token = live.seeded.token
    r = run("ls", "--json", url=live.url, token=token)
    assert live.ft in [ft["id"] for ft in json.loads(r.stdout)["data"]]
    r = run("ls", url=live.url, token=token)
    assert r.stdout.startswith("ID") and live.ft in r.stdout
    r = run("checkpoints", live.ft, "--json", url=live.url, token=token)
    assert [c["step"] for c in json.loads(r.stdout)["data"]] == [100]
    r = run("checkpoints", live.ft, url=live.url, token=token)
    assert f"tunevault download {live.ft} --checkpoint model_output_path" in r.stdout


def test_together_environment(live: Live) -> None:
    env = {"TOGETHER_BASE_URL": live.url + "/v1", "TOGETHER_API_KEY": live.seeded.token}
    r = subprocess.run(
        [sys.executable, "-m", "tunevault", "ls", "--json"],
        env={k: v for k, v in os.environ.items() if not k.startswith("TUNEVAULT_")} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and live.ft in r.stdout


def _wait_for(predicate: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


@pytest.mark.parametrize("connections", [1, 3])
def test_sigkill_then_rerun_transfers_only_the_rest(
    live: Live, proxy: FaultProxy, tmp_path: Path, connections: int
) -> None:
    if connections == 1:
        stall = 7 * MiB + 12345  # inside Together's first 10 MiB step
        proxy.push(Fault(stall_after=stall))
    else:  # the first request is piece 0; stall one of the ranged pieces after 1 MiB
        proxy.push(Fault(), Fault(stall_after=MiB + 12345))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TUNEVAULT_")},
        "TUNEVAULT_URL": proxy.url,
        "TUNEVAULT_API_KEY": live.seeded.token,
    }
    args = ["download", live.ft, "-o", str(tmp_path), "--connections", str(connections)]
    final = tmp_path / live.filename

    def gaps() -> list[tuple[int, int]] | None:
        part = PartFile.load(final)
        if part is None:
            return None
        missing = part.missing()
        part.close()
        return missing

    def settled() -> bool:
        # Everything but the stalled stream's partial last chunk has been written.
        g = gaps()
        if g is None:
            return False
        if connections == 1:
            return g[0][0] >= stall - MiB
        return len(g) == 1 and g[0][1] - g[0][0] <= 3 * MiB

    proc = subprocess.Popen([sys.executable, "-m", "tunevault", *args], env=env)
    try:
        _wait_for(proxy.stalled.is_set, "the download to reach the stall")
        _wait_for(settled, "the first run's bytes to be recorded")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proxy.release()
    missing = gaps()
    assert missing is not None and leftovers(tmp_path) == [
        final.name + ".part",
        final.name + ".part.tv",
    ]
    present = len(live.data) - sum(b - a for a, b in missing)
    if connections == 1:
        assert stall - present < MiB  # lost: only the killed run's unwritten last chunk
    before = len(proxy.downloads())
    r = run(*args, "--json", url=proxy.url, token=live.seeded.token)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert final.read_bytes() == live.data
    rerun = proxy.downloads()[before:]
    # Only the rest crossed the wire.
    assert result["resumed_bytes"] == present and result["transferred"] == len(live.data) - present
    assert sum(ex.body_bytes for ex in rerun) == len(live.data) - present
    assert rerun[0].headers["range"].startswith(f"bytes={missing[0][0]}-")
    assert leftovers(tmp_path) == []


def test_waiting_is_shown_and_bounded(live: Live) -> None:
    r = run("download", live.pending_ft, "--wait", "3", url=live.url, token=live.seeded.token)
    assert r.returncode == 7, r.stderr
    [shown] = [line for line in r.stderr.splitlines() if "checking again in" in line]
    # The server's own account of the build, as it says it (queue place, progress, estimate).
    assert shown.startswith(f"{live.pending_ft} (default): model_output_path archive of ")
    # Whatever Retry-After says, the client looks again within its cap.
    pause = float(shown.split("checking again in ")[1].split(" s")[0])
    assert pause <= POLL_CAP
    assert r.stderr.splitlines()[-1].endswith(
        "still not ready after 3 s: run the same command again later, or pass a longer --wait"
    )
