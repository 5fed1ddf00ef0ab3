"""Downloading one 2 GiB archive: the `tunevault download` CLI versus `curl -o`.

Same server (a live tunevault, sendfile), same disk, same run, alternating tools; before
each download the previous output is deleted and `sync` flushes dirty pages, so no run
pays for another's writeback. tunevault's wall includes interpreter start, the sha256
verification and the rename; curl verifies nothing. Then a resume measurement: the CLI
downloads through a counting proxy, is stopped (SIGSTOP) once half the archive is in its
.part, the TCP counters of its socket are read with `ss` (received, still unread: what
the process itself had read), it is SIGKILLed, and run again.

`--fill-cache GIB` first writes that many GiB of other files (so they sit in the page cache
for the whole run, deleted at the end), the condition of a machine whose page cache is
full of other files, where the client once fell to half curl's speed.

    .venv/bin/python -m bench.download_bench [--size-mib 2048] [--repeat 3] [--fill-cache 16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import settle_reporting
from tests.client.seeding import seed_store
from tests.support.faultproxy import FaultProxy
from tests.support.server import run_server
from tunevault.client.state import PartFile

OUT = Path(__file__).parent / "out" / "download"
MiB = 1 << 20
SPARE = 40 << 30  # disk left free after the fill, for the archive, the downloads and others


def prepare(data_dir: Path, size: int) -> tuple[str, str, int]:
    """(token, ft_id, archive size), reusing an earlier seed of the same size."""
    meta = data_dir / "seed.json"
    if meta.exists():
        seed = json.loads(meta.read_text())
        if seed["requested"] == size:
            return seed["token"], seed["ft"], seed["size"]
    if data_dir.exists():
        subprocess.run(["rm", "-rf", str(data_dir)], check=True)
    parts = 4
    sizes = {f"model-{i + 1:05d}-of-{parts:05d}.safetensors": size // parts for i in range(parts)}
    seeded = seed_store(data_dir, sizes, level=1)
    subprocess.run(["rm", "-rf", str(data_dir / "src")], check=True)
    seed = {
        "requested": size,
        "token": seeded.token,
        "ft": seeded.ft.id,
        "size": seeded.archive.size,
    }
    meta.write_text(json.dumps(seed))
    return seeded.token, seeded.ft.id, seeded.archive.size


@contextlib.contextmanager
def filled_cache(where: Path, gib: int) -> Iterator[None]:
    """`gib` GiB of other files written (so in the page cache) for the duration, then
    deleted. Written, not sparse: a hole takes no page in the cache."""
    st = os.statvfs(where.parent)
    if gib and st.f_bavail * st.f_frsize < (gib << 30) + SPARE:
        raise SystemExit(f"--fill-cache {gib} needs {gib} GiB + 40 GiB free under {where.parent}")
    where.mkdir(parents=True, exist_ok=True)
    block = os.urandom(64 * MiB)
    try:
        for i in range(gib):
            with open(where / f"fill-{i}", "wb") as f:
                for _ in range(1024 // 64):
                    f.write(block)
        subprocess.run(["sync"], check=True)
        yield
    finally:
        subprocess.run(["rm", "-rf", str(where)], check=True)


def _clean(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for p in path.iterdir():
        p.unlink()
    subprocess.run(["sync"], check=True)
    settle_reporting()


def _env(url: str, token: str) -> dict[str, str]:
    return {**os.environ, "TUNEVAULT_URL": url, "TUNEVAULT_API_KEY": token}


def _children_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def run_curl(url: str, token: str, ft: str, dest: Path, size: int) -> tuple[float, float, float]:
    """(wall, user CPU, system CPU) of one curl download."""
    _clean(dest)
    target = f"{url}/v1/finetune/download?ft_id={ft}&checkpoint=model_output_path"
    auth = f"Authorization: Bearer {token}"
    cpu0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(
        ["curl", "-sS", "-f", "-o", str(dest / "a.tar.zst"), "-H", auth, target], check=True
    )
    elapsed, cpu1 = time.perf_counter() - t0, _children_cpu()
    assert (dest / "a.tar.zst").stat().st_size == size
    return elapsed, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]


def run_cli(
    url: str, token: str, ft: str, dest: Path, size: int, connections: int
) -> tuple[float, float, float, float]:
    """(process wall, user CPU, system CPU, the download's own seconds from --json: no
    interpreter start)."""
    _clean(dest)
    cmd = [sys.executable, "-m", "tunevault", "download", ft, "-o", str(dest), "--json"]
    cpu0, t0 = _children_cpu(), time.perf_counter()
    out = subprocess.run(
        [*cmd, "--connections", str(connections)],
        env=_env(url, token),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    elapsed, cpu1 = time.perf_counter() - t0, _children_cpu()
    result = json.loads(out)
    assert result["size"] == size and result["verified"], result
    return elapsed, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], float(result["seconds"])


def _client_socket(port: int) -> tuple[int, int]:
    """(bytes received, bytes still unread) of the CLI's connection to the proxy, from
    its own TCP counters: one consistent snapshot of one socket."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"bytes_received:(\d+)", out)
    assert match is not None, out
    return int(match.group(1)), int(out.split()[0])


def kill_and_resume(url: str, token: str, ft: str, dest: Path, size: int) -> dict[str, int]:
    _clean(dest)
    with FaultProxy(url) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        cmd = [sys.executable, "-m", "tunevault", "download", ft, "-o", str(dest), "--json"]
        proc = subprocess.Popen(cmd, env=_env(proxy.url, token))
        sidecar = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            found = list(dest.glob("*.part.tv"))
            if found:
                sidecar = found[0]
                part = PartFile.load(sidecar.with_name(sidecar.name.removesuffix(".part.tv")))
                if part is not None:
                    present = part.spans.total()
                    part.close()
                    if present >= size // 2:
                        break
            time.sleep(0.01)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # the proxy fills the socket buffers of the stopped process
        received, unread = _client_socket(port)
        (first,) = proxy.downloads()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert sidecar is not None
        part = PartFile.load(sidecar.with_name(sidecar.name.removesuffix(".part.tv")))
        assert part is not None
        present = part.spans.total()
        part.close()
        out = subprocess.run(
            cmd, env=_env(proxy.url, token), check=True, capture_output=True, text=True
        ).stdout
        result = json.loads(out)
        assert result["verified"] and result["resumed_bytes"] == present
        second = sum(ex.body_bytes for ex in proxy.downloads()[1:])
    read_by_process = received - unread - first.head_bytes
    return {
        "recorded_when_killed": present,
        "sent_to_killed_process": first.body_bytes,
        "read_by_killed_process": read_by_process,
        "rerun_sent": second,
        "retransferred": first.body_bytes + second - size,
        "lost_in_flight": first.body_bytes - read_by_process,
        "lost_beyond_in_flight": read_by_process - present,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kills", type=int, default=1, help="kill-at-50%% measurements")
    parser.add_argument("--data-dir", type=Path, default=OUT / "data")
    parser.add_argument(
        "--fill-cache", type=int, default=0, metavar="GIB", help="GiB of other files cached"
    )
    args = parser.parse_args()
    token, ft, size = prepare(args.data_dir, args.size_mib * MiB)
    load = os.getloadavg()  # before the fill and the runs: what else was running
    dest = OUT / "dl"
    walls: dict[str, list[float]] = {}
    cpus: dict[str, list[tuple[float, float]]] = {}

    def record(name: str, wall: float, user: float, system: float) -> None:
        walls.setdefault(name, []).append(wall)
        cpus.setdefault(name, []).append((user, system))

    with filled_cache(OUT / "fill", args.fill_cache), run_server(args.data_dir) as server:
        for _ in range(args.repeat):
            record("curl", *run_curl(server.url, token, ft, dest, size))
            for n, name in ((1, ""), (4, "-4")):
                wall, user, system, engine = run_cli(server.url, token, ft, dest, size, n)
                record("tunevault" + name, wall, user, system)
                walls.setdefault("engine" + name, []).append(engine)
        kills = [kill_and_resume(server.url, token, ft, dest, size) for _ in range(args.kills)]
    _clean(dest)
    print(f"archive: {size} bytes; machine: {platform.platform()}, {os.cpu_count()} cores")
    print(
        f"page cache filled with {args.fill_cache} GiB of other files; load average before: {load}"
    )
    curl = statistics.median(walls["curl"])
    for name, runs in walls.items():
        med = statistics.median(runs)
        cpu = ""
        if name in cpus:
            user = statistics.median(u for u, _ in cpus[name])
            system = statistics.median(s for _, s in cpus[name])
            cpu = f"  CPU user {user:.2f} s sys {system:.2f} s"
        print(
            f"{name:12} median {med:6.2f} s  {size / med / 1e6:7.0f} MB/s  "
            f"{curl / med:4.2f}x curl{cpu}  runs: {', '.join(f'{w:.2f}' for w in runs)}"
        )
    for resume in kills:
        print("kill at 50% then rerun:", json.dumps(resume))


if __name__ == "__main__":
    main()
