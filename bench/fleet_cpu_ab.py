"""Server CPU per answer of two checkouts, A/B in one run (issue 16).

The same store (fleet_bench's: a redirect on PostgreSQL + SeaweedFS, or a 0.5 MiB
archive in proxy mode on SQLite + local disk) served at once by a server from each
checkout's `src`; wrk runs alternate between them, and each run's figure is the serving
processes' user + system time over the run divided by its answers. Alternating pairs
keep the comparison fair while other work loads the machine, which moves the rates far
more than the CPU per answer.

    .venv/bin/python -m bench.fleet_cpu_ab --baseline /path/to/other/src
        [--case redirect|small] [--processes 2] [--rounds 3] [--seconds 5]
        [--env NAME=VALUE ...]   (settings for this checkout's server only)

`--baseline` may name this checkout's own src, to compare settings with `--env`.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

import tunevault
from bench.common import random_file, tree_cpu
from bench.fleet_bench import Q, redirect_store
from bench.loadgen import load_average, wrk
from tests.support.seeding import seed_fine_tune
from tests.support.server import run_server
from tunevault.settings import Settings

HERE = Path(tunevault.__file__).parents[1]  # this checkout's src
ROOT = Path(__file__).parents[1]  # for the bench and tests packages


@contextlib.contextmanager
def store(tmp: Path, case: str) -> Iterator[tuple[Path, dict[str, str], str, str]]:
    """(data dir, server env, token, ft id) of a fine-tune for `case`."""
    src = tmp / "src"
    src.mkdir()
    if case == "redirect":
        random_file(src / "model.safetensors", 1 << 20)
        with redirect_store(tmp, src) as found:
            yield found
        return
    random_file(src / "adapter_model.safetensors", 512 << 10)
    settings = Settings(data_dir=tmp / "local")
    token, ft, _ = seed_fine_tune(settings, src)
    yield settings.data_dir, {}, token, ft.id


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", type=Path, required=True, help="the other checkout's src")
    ap.add_argument("--case", choices=("redirect", "small"), default="redirect")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for this side")
    args = ap.parse_args()
    sides = {"baseline": args.baseline.resolve(), "this": HERE}
    extra = {"baseline": {}, "this": dict(e.split("=", 1) for e in args.env)}
    procs = ("--processes", str(args.processes))
    with (
        tempfile.TemporaryDirectory(prefix="tv-ab-", dir="/var/tmp") as tmp,
        store(Path(tmp), args.case) as (data_dir, env, token, ft_id),
        contextlib.ExitStack() as stack,
    ):
        servers = {
            name: stack.enter_context(
                run_server(
                    data_dir,
                    env={**env, **extra[name], "PYTHONPATH": f"{src}:{ROOT}"},
                    args=procs,
                )
            )
            for name, src in sides.items()
        }
        routes = {"download": Q + ft_id}
        if args.case == "redirect":
            routes["Hub resolve"] = f"/{ft_id}/resolve/main/model.safetensors"
        auth = [f"Authorization: Bearer {token}"]
        for route, path in routes.items():
            figures: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(args.rounds):
                for name, srv in servers.items():
                    avg, before = load_average(), tree_cpu(srv.process.pid)
                    load = wrk(srv.url + path, auth, 200, args.seconds)
                    us = (tree_cpu(srv.process.pid) - before) / load.requests * 1e6
                    figures[name].append(us)
                    print(
                        f"{route}, {name}: {load.rps:.0f}/s, p99 {load.p99_ms:.0f} ms, "
                        f"{load.bad} errors, {us:.0f} us CPU per answer, load {avg:.1f}",
                        flush=True,
                    )
            medians = {name: statistics.median(v) for name, v in figures.items()}
            print(f"== {route}: median us per answer {medians}", flush=True)


if __name__ == "__main__":
    main()
