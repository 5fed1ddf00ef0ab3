"""Helpers shared by the benchmarks: data generation, curl, RSS sampling."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def random_file(path: Path, size: int) -> Path:
    """Incompressible bytes: for serving and uploads, where the content does not matter."""
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n
    return path


def curl_many(urls: list[str], headers: list[str], expect_bytes: int) -> float:
    """Start one curl per URL at once; returns the aggregate MB/s over the wall time."""
    args = [a for h in headers for a in ("-H", h)]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}", *args, u],
            stdout=subprocess.PIPE,
            text=True,
        )
        for u in urls
    ]
    total = 0
    for p in procs:
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, f"curl failed with {p.returncode}"
        total += int(out)
    elapsed = time.perf_counter() - t0
    assert total == expect_bytes, (urls[0], headers[-1:], total, expect_bytes)
    return total / elapsed / 1e6


def curl_sha256(url: str, headers: list[str]) -> str:
    """The sha256 of what curl receives (following redirects): untimed, the check that a
    timed transfer served the right bytes."""
    args = [a for h in headers for a in ("-H", h)]
    proc = subprocess.Popen(["curl", "-sS", "-f", "-L", *args, url], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    h = hashlib.sha256()
    while chunk := proc.stdout.read(1 << 20):
        h.update(chunk)
    assert proc.wait() == 0, f"curl failed with {proc.returncode}"
    return h.hexdigest()


class RssSampler:
    """Peak resident memory of a process, sampled from /proc every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while not self._stop.wait(0.05):
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


_REPORTING_QUIET_S = 3.0  # above the kernel's 2 s between reporting rounds


def settle_reporting() -> None:
    """On a VM that reports free memory to its host (virtio-balloon free page reporting),
    wait until the memory the previous run's file gave back has been reported. Writing
    into reported memory costs the host's fault on first touch (bench.pagecache_bench:
    1.6 GiB in 1 MiB writes, 2.1-3.3 s of system time once reported), so a run's cost
    would depend on how soon it started after the unlink; this way every run of either
    tool starts from the same state. The kernel reports in rounds PAGE_REPORTING_DELAY
    (2 s) apart, starting 2 s after the free: the counter must stand still for longer
    than that, about 11 s after a free of 1.6 GiB."""
    counter = Path("/sys/module/page_reporting/parameters/reported_kib")
    if not counter.exists():
        return
    print("waiting for the VM's free page reporting to settle", file=sys.stderr, flush=True)
    last, still_since, deadline = counter.read_text(), time.monotonic(), time.monotonic() + 60
    while time.monotonic() - still_since < _REPORTING_QUIET_S:
        if time.monotonic() >= deadline:
            print("free page reporting still moving after 60 s: going on", file=sys.stderr)
            return
        time.sleep(0.2)
        now = counter.read_text()
        if now != last:
            last, still_since = now, time.monotonic()


def tree_cpu(pid: int) -> float:
    """User + system seconds of a process and its children (a master's servers)."""
    pids = {pid}
    for task in os.listdir(f"/proc/{pid}/task"):
        pids |= {int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()}
    ticks = 0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")
