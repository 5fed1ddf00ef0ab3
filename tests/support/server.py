"""A real tunevault server process on a loopback port, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.postgres import free_port


@dataclass(frozen=True)
class LiveServer:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"server at {url} did not become healthy")


def _spawn(
    data_dir: Path, env: dict[str, str] | None, args: tuple[str, ...], port: int | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / f"server-{port}.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tunevault",
                "serve",
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return f"http://127.0.0.1:{port}", proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def run_server(
    data_dir: Path,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    port: int | None = None,  # a port clients were told before the server started
) -> Iterator[LiveServer]:
    url, proc = _spawn(data_dir, env, args, port)
    try:
        wait_healthy(url, proc)
        yield LiveServer(url=url, data_dir=data_dir, process=proc)
    finally:
        stop(proc)


@contextlib.contextmanager
def run_servers(data_dirs: list[Path], env: dict[str, str]) -> Iterator[list[LiveServer]]:
    """Servers started all at once (none waits for another), then waited for."""
    started = [(d, *_spawn(d, env, ())) for d in data_dirs]
    try:
        for _, url, proc in started:
            wait_healthy(url, proc)
        yield [LiveServer(url=url, data_dir=d, process=proc) for d, url, proc in started]
    finally:
        for _, _, proc in started:
            stop(proc)
