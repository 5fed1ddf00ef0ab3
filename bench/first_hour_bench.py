"""The ML engineer's first hour, timed: push a LoRA on a 2 GB base, then at once
`tunevault download --checkpoint merged`, end to end, against the sum of its parts each
measured alone in the same run (the push, the merge, storing the merged files, the
archive build, the download). What is left over is the waiting the service adds, within
the run-to-run noise of the parts; so the bench also reads the wait directly: from the
moment the merged archive was recorded (its row) to the start of the download request
that got it (the server's access log), both on the server's clock.

    .venv/bin/python -m bench.first_hour_bench [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.merge_bench import write_adapter, write_base
from tests.support.server import run_server
from tunevault.models import Kind, Scope
from tunevault.service.builds import build_archive
from tunevault.service.context import open_services
from tunevault.service.publishing import commit_checkpoint, put_directory
from tunevault.settings import Settings

BASE = "bench/llama-2g"


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cli(env: dict[str, str], *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "tunevault", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def server_env(url: str, token: str) -> dict[str, str]:
    return {**os.environ, "TUNEVAULT_URL": url, "TUNEVAULT_API_KEY": token}


def end_to_end(env: dict[str, str], adapter: Path, out: Path) -> tuple[str, float, float, str]:
    """(fine-tune id, push seconds, push + download seconds, the archive's sha256)."""
    t0 = time.perf_counter()
    pushed = cli(env, "push", str(adapter), "--model", BASE, "--new")
    t_push = time.perf_counter() - t0
    ft_id = str(pushed["id"])
    got = cli(env, "download", ft_id, "--checkpoint", "merged", "-o", str(out))
    return ft_id, t_push, time.perf_counter() - t0, str(got["sha256"])


def noticed_after(settings: Settings, org_id: str, ft_id: str, since: float) -> float:
    """Seconds from the merged archive's recording to the start of the first download
    request answered 200 after `since` (epoch seconds)."""
    with open_services(settings) as svc:
        _, rows = svc.store.fine_tune_with_archives(org_id, ft_id)
    (ready,) = [a.created_at.timestamp() for c, a in rows if c.kind == Kind.MERGED and a]
    starts = []
    for log in settings.data_dir.glob("server-*.log"):
        for line in log.read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("path") == "/v1/finetune/download" and entry.get("status") == 200:
                end = datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
                start = end.replace(tzinfo=UTC).timestamp() - float(entry["seconds"])
                if start >= since:
                    starts.append(start)
    return min(starts) - ready


def parts_alone(tmp: Path, base: Path, adapter: Path) -> dict[str, float]:
    """The merge, storing its files and building their archive, on a store of their own."""
    merged = tmp / "merged-alone"
    times = {
        "merge": timed(lambda: cli({**os.environ}, "merge", str(base), str(adapter), str(merged)))
    }
    with open_services(Settings(data_dir=tmp / "parts")) as svc:
        org = svc.store.create_org("parts")
        ft = svc.store.create_fine_tune(
            org.id, model=BASE, model_output_name="parts/m", training_type="Full"
        )
        t0 = time.perf_counter()
        files = put_directory(svc.store, svc.storage, org.id, merged)
        times["store"] = time.perf_counter() - t0
        ckpt, _ = commit_checkpoint(
            svc, ft, step=1, kind=Kind.MODEL_OUTPUT, final=True, files=files
        )
        times["build"] = timed(lambda: build_archive(svc.store, svc.storage, ckpt.id))
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="first-hour-") as name:
        tmp = Path(name)
        write_base(tmp / "base")
        write_adapter(tmp / "adapter")
        size = sum(p.stat().st_size for p in (tmp / "base").iterdir())
        settings = Settings(data_dir=tmp / "data")
        with open_services(settings) as svc:
            org = svc.store.create_org("bench")
            _, token = svc.store.create_key(org.id, "bench", [Scope.READ, Scope.PUBLISH])
        with run_server(settings.data_dir) as server:
            env = server_env(server.url, token)
            cli(env, "base", "push", BASE, str(tmp / "base"))
            for run in range(args.repeat):
                out, again = tmp / f"e2e-{run}.tar.zst", tmp / f"again-{run}.tar.zst"
                since = time.time()
                ft_id, t_push, t_e2e, sha = end_to_end(env, tmp / "adapter", out)
                noticed = noticed_after(settings, org.id, ft_id, since)
                t0 = time.perf_counter()
                got = cli(env, "download", ft_id, "--checkpoint", "merged", "-o", str(again))
                t_dl = time.perf_counter() - t0
                assert got["sha256"] == sha, "the archive changed between two downloads"
                parts = parts_alone(tmp / f"parts-{run}", tmp / "base", tmp / "adapter")
                total = t_push + parts["merge"] + parts["store"] + parts["build"] + t_dl
                print(
                    f"run {run + 1}: base {size / 2**30:.2f} GiB; end to end {t_e2e:.2f} s; parts: "
                    f"push {t_push:.2f} + merge {parts['merge']:.2f} + store {parts['store']:.2f}"
                    f" + build {parts['build']:.2f} + download {t_dl:.2f} = {total:.2f} s; "
                    f"difference {t_e2e - total:+.2f} s; the download started {noticed:.2f} s "
                    f"after the merged archive was recorded (sha256 {sha[:12]})"
                )


if __name__ == "__main__":
    main()
