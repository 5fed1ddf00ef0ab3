"""A lean load generator for request-rate figures: wrk (Debian's `wrk`, C, epoll), whose
own CPU time is measured and reported, since it shares the machine with the server.

An asyncio generator in Python (as scaleout_bench used) costs more CPU per request than
the server under test; wrk costs a few microseconds."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    bad: int  # answers outside 2xx/3xx, and socket errors
    cpu_seconds: float  # wrk's own user + system time

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}[unit]


def wrk(url: str, headers: list[str], connections: int, seconds: int, think_ms: int = 0) -> Load:
    """`connections` keep-alive clients asking for `url` for `seconds`, each asking again
    `think_ms` after every answer (0: at once, so the rate is the server's capacity and
    the latency is mostly queueing: Little's law ties it to connections / rate). wrk's
    latency excludes the think time."""
    binary = shutil.which("wrk")
    if binary is None:
        raise FileNotFoundError("wrk is not installed: apt-get install wrk")
    args = [a for h in headers for a in ("-H", h)]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if think_ms:
            script.write(f"function delay()\n  return {think_ms}\nend\n")
            script.flush()
            args += ["-s", script.name]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            [binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *args, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    done = re.search(r"(\d+) requests in ([0-9.]+)(ms|s)", out)
    assert done is not None, out
    elapsed = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    if errors := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        bad += sum(int(n) for n in errors.groups())
    return Load(
        requests=int(done.group(1)),
        seconds=elapsed,
        p50_ms=_ms(re.search(r"50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        p99_ms=_ms(re.search(r"99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        bad=bad,
        cpu_seconds=cpu,
    )


def load_average() -> float:
    return os.getloadavg()[0]
