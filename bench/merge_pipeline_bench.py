"""Merge pipeline: a LoRA adapter committed -> its merged archive downloadable, the
pipeline of this checkout against an earlier commit's (`--old-ref`), on local disk and on
SeaweedFS, with `tar -I 'zstd -3 -T0'` of the base alone as the reference. Run from the
repo root:

    .venv/bin/python -m bench.merge_pipeline_bench --repeat 3 --old-ref 6cd17e2

(6cd17e2: the merge run twice, once to hash the shards for a `SHA256SUMS` first, once into
the archive; 236d672 before it: merged files hashed as written, stored as blobs, the
archive packed from them. Today the merge runs once into the archive, `SHA256SUMS` last.)

The base is bench.merge_bench's 2.06 GiB bf16 Llama-shaped model, registered once per
storage; every timed run commits a new rank-16 adapter (a fresh seed) and times a
`tunevault worker` child (PYTHONPATH: this checkout's src, or the old ref's, exported
with `git archive`) from its start to the merged archive recorded, with its peak RSS,
its CPU time (user + system: on two cores, a job that needs more CPU than tar cannot
finish as fast as tar, however its work overlaps), the merge job's own time (from its
claim to its end: without the interpreter's start-up and the adapter's own archive,
which a resident worker does not pay before the merge) and minor page faults.
`--new-env NAME=VALUE` sets the new side's worker environment only: with `--old-ref
HEAD` that is an A/B of the setting, the code the same (e.g. glibc's
`MALLOC_TRIM_THRESHOLD_`). Each side has a store of its own, set up by its own code
(bench/merge_pipeline_side.py): an older ref cannot open a database a newer one migrated.

The three sides alternate in one run. Right before each, that side's previous output is
freed (tar's file; the pipeline's last fine-tune, its archive checked against its row and
dropped), then `sync`, and the 1-minute load average is recorded. This VM hands free
memory back to its host (free page reporting, from 2 s after a free), and writing into
memory the host took back costs several times as much (bench.pagecache_bench): each side
writes into memory freed just before it, as a running machine reuses its page cache,
rather than into whatever the timing left it.

On S3 a fourth side, "upload", times the object store taking the tar's output alone
through tunevault's writer: the floor under any pipeline that must store an archive of
that size there; and every side there reports SeaweedFS's own CPU time over it, the work
that shares the two cores with the pipeline.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import tree_cpu
from bench.merge_bench import write_adapter, write_base
from tests.support.seaweed import run_seaweedfs
from tunevault.service.context import open_services
from tunevault.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SIDE_OPS = ROOT / "bench" / "merge_pipeline_side.py"

CHILD = """
import json, re, time
t = time.perf_counter()
from tunevault.service.context import open_services
from tunevault.service.gc import collect
from tunevault.service.worker import Worker
from tunevault.settings import Settings
jobs = {}
with open_services(Settings()) as svc:
    worker = Worker(svc, observe=lambda kind, outcome, s: jobs.__setitem__(kind, s))
    while worker.run_once():
        pass
status = open("/proc/self/status").read()
rss = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024
print(json.dumps({"seconds": time.perf_counter() - t, "rss": rss, "job": jobs["merge"]}))
"""


def old_source(workdir: Path, ref: str) -> Path:
    """The ref's src, exported (read-only: no worktree, no checkout), kept under its
    commit's id: a ref such as HEAD or main moves."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    out = workdir / f"src-{commit[:12]}"
    if not out.exists():
        data = subprocess.run(
            ["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True
        )
        out.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(data.stdout)) as tar:
            tar.extractall(out, filter="data")
    return out / "src"


SIDES = ("new", "old")


Stores = tuple[dict[str, Settings], dict[str, str], int | None]


@contextlib.contextmanager
def storage_env(kind: str, workdir: Path) -> Iterator[Stores]:
    """A store for each side (an older ref cannot open a database a newer one migrated),
    on one SeaweedFS for S3; the environment, and SeaweedFS's pid (None on local disk)."""
    data = {side: workdir / kind / f"data-{side}" for side in SIDES}
    if kind == "local":
        yield {side: Settings(data_dir=d) for side, d in data.items()}, {}, None
        return
    with run_seaweedfs(workdir / kind / "weed") as weed, contextlib.ExitStack() as stack:
        env = weed.env()
        os.environ.update(env)
        yield (
            {
                side: Settings(
                    data_dir=d, storage_url=weed.storage_url(stack.enter_context(weed.bucket()))
                )
                for side, d in data.items()
            },
            env,
            weed.pid,
        )


def children_usage() -> tuple[float, int]:
    """User + system seconds and minor page faults of the children waited for so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime, r.ru_minflt


def used_since(before: tuple[float, int]) -> dict[str, float]:
    cpu, faults = children_usage()
    return {"cpu": cpu - before[0], "faults": faults - before[1]}


def run_child(settings: Settings, env: dict[str, str], src: Path, args: list[str]) -> Any:
    """Python with `src`'s tunevault over `settings`' store; the last line it prints."""
    child_env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(src),
        "TUNEVAULT_DATA_DIR": str(settings.data_dir),
        "TUNEVAULT_BUILD_WORKERS": "1",
        **({"TUNEVAULT_STORAGE_URL": settings.storage_url} if settings.storage_url else {}),
        **env,
    }
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=child_env)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def side_op(settings: Settings, env: dict[str, str], src: Path, op: str, **args: object) -> Any:
    """Untimed store operations (bench/merge_pipeline_side.py), with the side's own code."""
    return run_child(settings, env, src, [str(SIDE_OPS), op, json.dumps(args)])


def run_worker(settings: Settings, env: dict[str, str], src: Path) -> dict[str, float]:
    before = children_usage()
    result: dict[str, float] = run_child(settings, env, src, ["-c", CHILD])
    return {**result, **used_since(before)}


def run_tar(base: Path, out: Path) -> dict[str, float]:
    t, before = time.perf_counter(), children_usage()
    subprocess.run(["tar", "-I", "zstd -3 -T0", "-cf", str(out), "-C", str(base), "."], check=True)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "rss": 0, "job": seconds, **used_since(before)}


def run_upload(settings: Settings, archive: Path) -> dict[str, float]:
    """The object store ingesting the tar's output alone, through tunevault's writer: the
    floor under any pipeline that stores an archive of that size there."""
    key = "archives/bench-upload.tar.zst"
    with open_services(settings) as svc:
        t = time.perf_counter()
        with svc.storage.writer(key) as w, archive.open("rb") as f:
            shutil.copyfileobj(f, w, 8 << 20)
        seconds = time.perf_counter() - t
        svc.storage.delete(key)
    nan = float("nan")  # no child: the writer runs in this process (SeaweedFS's is store_cpu)
    return {"seconds": seconds, "rss": 0, "cpu": nan, "faults": nan, "job": seconds}


def bench_storage(
    kind: str, args: argparse.Namespace, base: Path, old_src: Path
) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {"new": [], "old": [], "tar": []}
    if kind == "s3":
        results["upload"] = []
    with storage_env(kind, args.workdir) as (settings, env, store_pid):
        sides = Sides(args, settings, env, {"new": ROOT / "src", "old": old_src}, base)
        # Untimed warm-up of both: imports in the page cache, and the base cache filled.
        for side in SIDES:
            sides.commit(side)
            first = sides.run(side)
            print(f"{kind} {side} warm-up (first merge): {first['seconds']:.2f} s", flush=True)
        for r in range(args.repeat):
            order = ["new", "old", "tar"] if r % 2 == 0 else ["tar", "old", "new"]
            if kind == "s3":  # after tar, whose output it uploads
                order.insert(order.index("tar") + 1, "upload")
            for side in order:
                if side in SIDES:
                    sides.commit(side)
                # Each side's previous output is freed right before its run (the others'
                # are long gone), so that each writes into memory freed just before, as a
                # running machine reuses its page cache (see the module's docstring).
                if side == "tar":
                    (args.workdir / "base.tar.zst").unlink(missing_ok=True)
                elif side in SIDES:
                    sides.drop_last(side)
                subprocess.run(["sync"], check=True)
                load = os.getloadavg()[0]
                store_before = tree_cpu(store_pid) if store_pid else 0.0
                if side == "tar":
                    res = run_tar(base, args.workdir / "base.tar.zst")
                elif side == "upload":
                    res = run_upload(settings["new"], args.workdir / "base.tar.zst")
                else:
                    res = sides.run(side)
                res["load"] = load
                # On S3 the object store's own work shares the cores: SeaweedFS's CPU too.
                res["store_cpu"] = tree_cpu(store_pid) - store_before if store_pid else 0.0
                results[side].append(res)
                print_run(kind, r, side, res)
        for side in SIDES:
            sides.drop_last(side)
    return results


class Sides:
    """The two pipelines' stores: a fine-tune committed before each run, its merged
    archive checked and dropped (gc) just before the side's next run."""

    def __init__(
        self,
        args: argparse.Namespace,
        settings: dict[str, Settings],
        env: dict[str, str],
        srcs: dict[str, Path],
        base: Path,
    ) -> None:
        self.workdir: Path = args.workdir
        self.settings, self.env, self.srcs = settings, env, srcs
        # --new-env: the same code under other settings of its process (an A/B of one env)
        self.worker_env = {"new": {**env, **args.new_env}, "old": env}
        self.orgs = {s: self._op(s, "register", base=str(base)) for s in SIDES}
        self.n = 0
        self.committed: dict[str, str] = {}
        self.last: dict[str, str] = {}

    def _op(self, side: str, op: str, **args: object) -> Any:
        return side_op(self.settings[side], self.env, self.srcs[side], op, **args)

    def commit(self, side: str) -> None:
        """A fresh adapter (a new seed: no blob of an earlier run's output can be reused)."""
        self.n += 1
        adapter = self.workdir / "adapters" / f"a{self.n}"
        if not adapter.exists():
            write_adapter(adapter, seed=self.n)
        ft = self._op(side, "commit", org=self.orgs[side], adapter=str(adapter), n=self.n)
        self.committed[side] = ft

    def run(self, side: str) -> dict[str, float]:
        res = run_worker(self.settings[side], self.worker_env[side], self.srcs[side])
        self.last[side] = self.committed.pop(side)
        return res

    def drop_last(self, side: str) -> None:
        if (ft := self.last.pop(side, None)) is not None:
            self._op(side, "check_and_drop", org=self.orgs[side], ft=ft)


def print_run(kind: str, r: int, side: str, res: dict[str, float]) -> None:
    print(
        f"{kind} run {r + 1} {side}: {res['seconds']:.2f} s (job {res['job']:.2f} s), "
        f"CPU {res['cpu']:.2f} s (object store {res['store_cpu']:.2f} s), "
        f"{res['faults']:.0f} minor faults, RSS {res['rss'] / 2**20:.0f} MiB, "
        f"load {res['load']:.2f}",
        flush=True,
    )


def report(kind: str, results: dict[str, list[dict[str, float]]]) -> None:
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in results.items()}
    for side in results:
        runs = ", ".join(f"{x['seconds']:.2f} (load {x['load']:.2f})" for x in results[side])
        rss = max(x["rss"] for x in results[side]) / 2**20
        ratio = med[side] / med["tar"]
        cpu = statistics.median(x["cpu"] for x in results[side])
        job = statistics.median(x["job"] for x in results[side])
        faults = statistics.median(x["faults"] for x in results[side])
        store = statistics.median(x["store_cpu"] for x in results[side])
        print(
            f"{kind:5s} {side}: median {med[side]:.2f} s, {ratio:.2f}x tar; merge job alone "
            f"median {job:.2f} s, {job / med['tar']:.2f}x tar; "
            f"CPU (user + system) median {cpu:.2f} s; object store CPU median {store:.2f} s; "
            f"minor faults median {faults:.0f}; "
            f"peak RSS {rss:.0f} MiB; runs {runs}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/mergepipe"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--old-ref", default="main", help="git ref of today's pipeline")
    parser.add_argument("--storage", choices=["local", "s3", "both"], default="both")
    parser.add_argument(
        "--new-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment of the new side's worker only (with --old-ref HEAD: an A/B of it)",
    )
    parser.add_argument(
        "--base", type=Path, default=Path("bench/out/merge/base"), help="made if missing"
    )
    args = parser.parse_args()
    args.new_env = dict(kv.split("=", 1) for kv in args.new_env)
    args.workdir = args.workdir.resolve()
    base = args.base.resolve()
    if not (base / "model.safetensors").exists():
        write_base(base)
    old_src = old_source(args.workdir, args.old_ref)
    kinds = ["local", "s3"] if args.storage == "both" else [args.storage]
    all_results = {}
    for kind in kinds:
        subprocess.run(["rm", "-rf", str(args.workdir / kind)], check=True)
        all_results[kind] = bench_storage(kind, args, base, old_src)
    size = sum(p.stat().st_size for p in base.iterdir())
    print(f"base: {size / 2**30:.2f} GiB; {os.cpu_count()} cores")
    for kind, results in all_results.items():
        report(kind, results)


if __name__ == "__main__":
    main()
