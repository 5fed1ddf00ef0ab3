"""What a write's size costs when it creates new page cache (storage/pagecache.py).

Writes `--size-mib` into a new file, in writes of each size given, from one reused buffer
of random bytes; sizes and the two writers alternate round by round. Before each run the
previous file is removed, `sync` runs and the VM's free page reporting settles
(bench/common.py), as in the download bench. The figure is the writer's system time: the
copy into the page cache and whatever the first touch of the new folios costs. dd with the
same block size is the reference, so the effect is shown with a tool that is not ours.

    .venv/bin/python -m bench.pagecache_bench [--size-mib 2048] [--rounds 5] [--sizes 16,256,1024]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.common import settle_reporting

MiB = 1 << 20


def fresh(path: Path) -> None:
    path.unlink(missing_ok=True)
    subprocess.run(["sync"], check=True)
    settle_reporting()


def ours(path: Path, size: int, kib: int) -> float:
    """System seconds of writing `size` bytes in `kib` KiB writes from this process."""
    buf = memoryview(os.urandom(kib << 10))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // len(buf)):
            done = 0
            while done < len(buf):
                done += os.write(fd, buf[done:])
    finally:
        os.close(fd)
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime - before


def dd(path: Path, size: int, kib: int) -> float:
    """System seconds of `dd if=/dev/zero` with `kib` KiB blocks."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    count = size // (kib << 10)
    args = ["dd", "if=/dev/zero", f"of={path}", f"bs={kib}K", f"count={count}", "status=none"]
    subprocess.run(args, check=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", default="16,256,1024", help="write sizes in KiB")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    size = args.size_mib * MiB
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tv-pagecache-", dir="/var/tmp") as tmp:
        path = Path(tmp) / "written"
        for r in range(args.rounds):
            for kib in sizes[r % len(sizes) :] + sizes[: r % len(sizes)]:
                writers = (("python write", ours), ("dd", dd))
                for name, fn in writers[r % 2 :] + writers[: r % 2]:
                    fresh(path)
                    runs.setdefault(f"{name}, {kib} KiB", []).append(fn(path, size, kib))
        path.unlink(missing_ok=True)
    print(f"{args.size_mib} MiB into a new file, system seconds, {args.rounds} rounds")
    print("| writer, write size | median | all runs |\n|---|---|---|")
    for name, secs in runs.items():
        all_runs = ", ".join(f"{s:.2f}" for s in secs)
        print(f"| {name} | {statistics.median(secs):.2f} | {all_runs} |")


if __name__ == "__main__":
    main()
