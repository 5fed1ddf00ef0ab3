"""Derived data as a cache: the bytes stored for N LoRA fine-tunes of S steps each on one
base, without a derived budget and with one, and the time to download an evicted merged
archive (rebuilt inside the request) against its first build.

Every adapter step and every final merge goes through the normal path (publish, the
build worker); the budget is applied by `tunevault gc`'s pass. The evicted archive is
downloaded from a live server by a plain HTTP client (as the together SDK is: held while
the rebuild runs) and checked against the sha256 it had.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from tests.support.server import run_server
from tunevault.models import FineTune, Kind, Scope
from tunevault.service.cache import set_pin
from tunevault.service.context import Services, open_services
from tunevault.service.demo import TinyLlama, base_weights, write_adapter, write_model
from tunevault.service.gc import collect
from tunevault.service.publishing import publish_directory, put_directory, register_base_model
from tunevault.service.worker import Worker
from tunevault.settings import Settings

BASE = "bench/base"


def stored_bytes(svc: Services) -> int:
    return sum(st.size for key in svc.storage.list("") if (st := svc.storage.stat(key)))


def seed(svc: Services, spec: TinyLlama, fine_tunes: int, steps: int, tmp: Path) -> list[float]:
    """The base, then the fine-tunes' adapters step by step; the merge jobs' seconds."""
    rng = np.random.default_rng(0)
    org = svc.store.create_org("bench")
    base_dir = write_model(tmp / "base", spec, base_weights(spec, rng))
    register_base_model(svc, org.id, BASE, put_directory(svc.store, svc.storage, org.id, base_dir))
    shutil.rmtree(base_dir)
    for n in range(fine_tunes):
        ft = svc.store.create_fine_tune(
            org.id,
            model=BASE,
            model_output_name=f"bench/lora-{n}",
            training_type="Lora",
            lora_r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            lora_trainable_modules="all-linear",
            status="running",
        )
        for step in range(1, steps + 1):
            adapter = write_adapter(tmp / f"a-{n}-{step}", spec, rng, scale=step)
            publish_directory(svc, ft, adapter, step=step, kind=Kind.ADAPTER, final=step == steps)
            shutil.rmtree(adapter)
    seconds: list[float] = []
    worker = Worker(svc, observe=lambda kind, _o, s: seconds.append(s) if kind == "merge" else None)
    while worker.run_once():
        pass
    return seconds


def held_download(url: str, token: str, ft: FineTune) -> tuple[float, str, int]:
    """Seconds to the last byte of the merged archive, its sha256, and the 409s it met
    (answered past the hold; retried after Retry-After, as the SDK does)."""
    q = f"{url}/v1/finetune/download?ft_id={ft.id}&checkpoint=merged"
    started, refusals = time.monotonic(), 0
    with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {token}"}) as c:
        while True:
            with c.stream("GET", q) as r:
                if r.status_code == 409:
                    refusals += 1
                    time.sleep(int(r.headers["Retry-After"]))
                    continue
                r.raise_for_status()
                digest = hashlib.sha256()
                for chunk in r.iter_bytes(1 << 20):
                    digest.update(chunk)
                return time.monotonic() - started, digest.hexdigest(), refusals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fine-tunes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument(
        "--budget-merged", type=float, default=2, help="The budget, in merged fine-tunes' bytes."
    )
    args = parser.parse_args()
    spec = TinyLlama(args.vocab, args.hidden, args.intermediate, args.layers, 4, 2)
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp_name:
        tmp = Path(tmp_name)
        settings = Settings(data_dir=tmp / "data")
        with open_services(settings) as svc:
            merges = seed(svc, spec, args.fine_tunes, args.steps, tmp)
            org = svc.store.get_org_by_name("bench")
            assert org is not None
            fts = svc.store.list_fine_tunes(org.id)
            (usage,) = svc.store.usage()
            base = svc.store.get_base_model(usage.org_id, BASE)
            assert base is not None
            base_bytes = sum(f.size for f in base.files)
            before = stored_bytes(svc)
            per_merged = usage.merged_bytes / len(fts) + usage.archive_bytes / len(fts) / 2
            budget = int(args.budget_merged * per_merged)
            budgeted = Services(
                settings.model_copy(
                    update={"derived_budget_bytes": budget, "derived_evict_grace_seconds": 0}
                ),
                svc.store,
                svc.storage,
            )
            kept = fts[0]  # pinned: its merged archive is the warm download
            set_pin(svc, kept.id, None, True)
            report = collect(budgeted, grace_seconds=0, dry_run=False)
            after = stored_bytes(svc)
            evicted = {(e.ft_id, e.kind): e.sha256 for e in report.archives_evicted}
            oldest = next(ft for ft in reversed(fts) if (ft.id, Kind.MERGED) in evicted)
            _, token = svc.store.create_key(usage.org_id, "bench", [Scope.READ])
        with run_server(settings.data_dir) as server:
            held_download(server.url, token, kept)  # the server's first request warms it up
            warm, _, _ = held_download(server.url, token, kept)
            cold, digest, refusals = held_download(server.url, token, oldest)
        assert digest == evicted[(oldest.id, Kind.MERGED)], "the rebuild differs"
    mib = 2**20
    print(f"base {base_bytes / mib:.0f} MiB; {len(fts)} LoRA fine-tunes x {args.steps} steps")
    print(f"stored, no budget: {before / mib:.0f} MiB (source {usage.source_bytes / mib:.0f})")
    print(f"stored, budget {budget / mib:.0f} MiB: {after / mib:.0f} MiB")
    print(f"archives evicted: {len(report.archives_evicted)}")
    print(f"first merge+pack (median of {len(merges)}): {statistics.median(merges):.2f} s")
    print(f"download of a kept (pinned) merged archive: {warm:.2f} s")
    print(f"download of an evicted merged archive, rebuilt in the request: {cold:.2f} s "
          f"({refusals} 409s)")  # fmt: skip


if __name__ == "__main__":
    main()
