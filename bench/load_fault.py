"""Load and fault run: 100 clients download and resume for a few minutes across two
replicas (PostgreSQL + shared storage) while one replica is killed and restarted and a
publish runs. Reports requests, bytes, errors (recovered or not), corrupt files, and the
servers' memory over time, and checks the download audit against the answers the
clients saw (bench/audit_check.py): one row per download answered, except what the
SIGKILL of a replica may lose. Bounded in time and count; loopback only.

    .venv/bin/python -m bench.load_fault [--clients 100] [--seconds 150] [--size-mib 24]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.audit_check import AGENT, Answer, AuditCheck, all_rows, check_audit
from bench.common import random_file
from tests.support.postgres import create_database, free_port, run_postgres
from tests.support.publishing import api_client, publish_files
from tests.support.seeding import publish_and_build
from tests.support.server import wait_healthy
from tunevault.models import Scope
from tunevault.service.context import open_services
from tunevault.settings import Settings

CHUNK = 256 << 10
MAX_ATTEMPTS = 30


@dataclass
class Stats:
    requests: int = 0
    bytes: int = 0
    recovered_errors: int = 0
    downloads_ok: int = 0
    downloads_failed: int = 0
    corrupt: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    answers: dict[str, Answer] = field(default_factory=dict)  # by request id
    other_downloads: int = 0  # the publish check's own (audited) download
    ids: itertools.count[int] = field(default_factory=itertools.count)


class Replica:
    def __init__(self, name: str, data_dir: Path, env: dict[str, str]) -> None:
        self.name, self.data_dir, self.env = name, data_dir, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss: list[tuple[float, int]] = []
        self.lives = 0  # starts so far: a request names the life that answered it
        self.killed: set[str] = set()

    @property
    def life(self) -> str:
        return f"{self.name}{self.lives}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lives += 1  # before it listens: whatever it answers is of this life
        log = (self.data_dir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tunevault",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
            ],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_healthy(self.url, self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.killed.add(self.life)
        self.proc.kill()
        self.proc.wait()

    def sample(self, t: float) -> None:
        if self.proc and self.proc.poll() is None:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.rss.append((t, int(line.split()[1]) // 1024))


async def download(
    session: aiohttp.ClientSession,
    replicas: list[Replica],
    path: str,
    token: str,
    want_sha: str,
    stats: Stats,
    rng: random.Random,
) -> None:
    """One download, cut at random points and resumed (If-Range) on random replicas."""
    h = hashlib.sha256()
    have, etag, total = 0, None, None
    for _ in range(MAX_ATTEMPTS):
        replica = rng.choice(replicas)
        rid = f"{replica.life}/{next(stats.ids)}"
        headers = {"Authorization": f"Bearer {token}", "User-Agent": f"{AGENT}/{rid}"}
        if have:
            headers |= {"Range": f"bytes={have}-", "If-Range": etag or ""}
        cut = rng.randrange(CHUNK, 64 << 20) if rng.random() < 0.4 else None
        try:
            stats.requests += 1
            async with session.get(replica.url + path, headers=headers) as r:
                stats.statuses[r.status] = stats.statuses.get(r.status, 0) + 1
                answer = stats.answers[rid] = Answer(replica.life, r.status)
                if r.status == 200 and have:  # the archive changed: start over
                    h, have = hashlib.sha256(), 0
                elif r.status not in (200, 206):
                    stats.recovered_errors += 1
                    await asyncio.sleep(0.2)
                    continue
                etag = r.headers["ETag"]
                total = (
                    int(r.headers["Content-Range"].split("/")[1])
                    if r.status == 206
                    else (int(r.headers["Content-Length"]))
                )
                got = 0
                async for chunk in r.content.iter_chunked(CHUNK):
                    h.update(chunk)
                    have += len(chunk)
                    got += len(chunk)
                    stats.bytes += len(chunk)
                    if cut is not None and got >= cut:
                        answer.outcome = "cut"
                        break  # the client hangs up mid-body; resume on the next attempt
                else:
                    answer.outcome = "whole"
            if total is not None and have == total:
                ok = f'"{h.hexdigest()}"' == etag == f'"{want_sha}"'
                stats.downloads_ok += ok
                stats.corrupt += not ok
                return
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            stats.recovered_errors += 1
            await asyncio.sleep(0.2)
    stats.downloads_failed += 1


async def clients(
    n: int,
    seconds: float,
    replicas: list[Replica],
    targets: list[tuple[str, str]],
    token: str,
    stats: Stats,
) -> None:
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(sock_connect=5, sock_read=30)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:

        async def one(i: int) -> None:
            rng = random.Random(i)
            while time.monotonic() < deadline:
                path, sha = rng.choice(targets)
                await download(session, replicas, path, token, sha, stats, rng)

        await asyncio.gather(*(one(i) for i in range(n)))


def chaos(victim: Replica, at: float, down_for: float, log: list[str]) -> None:
    time.sleep(at)
    victim.kill()
    log.append(f"t={at:.0f}s: replica {victim.name} killed (SIGKILL)")
    time.sleep(down_for)
    victim.start()
    log.append(f"t={at + down_for:.0f}s: replica {victim.name} restarted on the same port")


def publish_during(replica: Replica, token: str, src: Path, log: list[str], stats: Stats) -> None:
    time.sleep(10)
    c = api_client(replica.url, token, timeout=120)
    t0 = time.monotonic()
    data = src.read_bytes()
    ft_id = publish_files(c, {"model.safetensors": data}, name="load/published")
    q = f"/v1/finetune/download?ft_id={ft_id}&checkpoint=model_output_path"
    for _ in range(600):
        r = c.get(q)
        if r.status_code == 200:
            stats.other_downloads += 1  # a download answer too: audited
            log.append(
                f"publish of {len(data) >> 20} MiB during the load: downloadable "
                f"after {time.monotonic() - t0:.1f}s"
            )
            return
        time.sleep(0.5)
    log.append("publish during the load: NOT downloadable in time")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=150)
    ap.add_argument("--size-mib", type=int, default=24)
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="tv-load-", dir="/var/tmp") as tmp_name,
        run_postgres() as pg,
    ):
        tmp = Path(tmp_name)
        shared = tmp / "blobs"
        env = {
            "TUNEVAULT_DATABASE_URL": create_database(pg, "load"),
            "TUNEVAULT_STORAGE_URL": shared.resolve().as_uri(),
            "TUNEVAULT_RATE_LIMIT_PER_MINUTE": "0",
            "TUNEVAULT_MAX_DOWNLOADS_PER_KEY": "0",
            "TUNEVAULT_LOG_LEVEL": "WARNING",
        }
        settings = Settings(
            data_dir=tmp / "seed",
            database_url=env["TUNEVAULT_DATABASE_URL"],
            storage_url=env["TUNEVAULT_STORAGE_URL"],
        )
        targets = []
        with open_services(settings) as svc:
            org = svc.store.create_org("load")
            _, token = svc.store.create_key(org.id, "load", [Scope.READ, Scope.PUBLISH])
            for i in range(3):
                src = tmp / f"src{i}"
                src.mkdir()
                random_file(src / "model.safetensors", (args.size_mib << 20) + i * 12345)
                ft = svc.store.create_fine_tune(
                    org.id,
                    model="m",
                    model_output_name=f"load/{i}",
                    training_type="Full",
                    status="completed",
                )
                archive = publish_and_build(svc, ft, src)
                targets.append(
                    (
                        f"/v1/finetune/download?ft_id={ft.id}&checkpoint=model_output_path",
                        archive.sha256,
                    )
                )
        pub_src = random_file(tmp / "publish.bin", 96 << 20)
        replicas = [Replica("A", tmp / "a", env), Replica("B", tmp / "b", env)]
        for r in replicas:
            r.start()
        events: list[str] = []
        stats = Stats()
        threads = [
            threading.Thread(target=chaos, args=(replicas[0], args.seconds / 3, 5, events)),
            threading.Thread(
                target=publish_during, args=(replicas[1], token, pub_src, events, stats)
            ),
        ]
        for t in threads:
            t.start()
        stop = threading.Event()
        t0 = time.monotonic()

        def sampler() -> None:
            while not stop.wait(1.0):
                for r in replicas:
                    r.sample(time.monotonic() - t0)

        threading.Thread(target=sampler, daemon=True).start()
        asyncio.run(clients(args.clients, args.seconds, replicas, targets, token, stats))
        elapsed = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join()
        for r in replicas:
            if r.proc:
                r.proc.terminate()  # graceful: its queued audit rows are written first
                r.proc.wait(60)
        killed = set().union(*(r.killed for r in replicas))
        with open_services(settings) as svc:
            audit = check_audit(all_rows(svc.store, org.id), stats.answers, killed)
    print(
        f"{args.clients} clients for {elapsed:.0f}s, 3 archives of ~{args.size_mib} MiB, "
        f"2 replicas on PostgreSQL + shared local storage; 40% of requests cut mid-body "
        f"and resumed with Range + If-Range on a random replica.\n"
    )
    for e in events:
        print(f"- {e}")
    print(
        f"\n| figure | value |\n|---|---|\n| requests | {stats.requests} |\n"
        f"| bytes received | {stats.bytes / 2**30:.1f} GiB |\n"
        f"| downloads completed and verified | {stats.downloads_ok} |\n"
        f"| errors recovered by retry/resume | {stats.recovered_errors} |\n"
        f"| downloads that could not complete | {stats.downloads_failed} |\n"
        f"| corrupt files | {stats.corrupt} |\n"
        f"| statuses | {dict(sorted(stats.statuses.items()))} |"
    )
    print("\nServer RSS (MiB) over time:\n")
    print("| t (s) | " + " | ".join(f"replica {r.name}" for r in replicas) + " |")
    print("|---|" + "---|" * len(replicas))
    for mark in range(0, int(elapsed) + 1, 15):
        cells = []
        for r in replicas:
            near = [mb for t, mb in r.rss if mark <= t < mark + 15]
            cells.append(str(max(near)) if near else "down")
        print(f"| {mark} | " + " | ".join(cells) + " |")
    print(
        "\nPeak RSS: " + ", ".join(f"{r.name} {max(mb for _, mb in r.rss)} MiB" for r in replicas)
    )
    report_audit(audit, stats)


def report_audit(audit: AuditCheck, stats: Stats) -> None:
    expected = audit.answered - audit.lost_to_kill - audit.in_flight_at_kill
    print(
        "\nDownload audit against the answers the clients saw:\n\n| figure | value |\n|---|---|\n"
        f"| download answers (200/206) seen by the clients | {audit.answered} |\n"
        f"| of which in flight on the killed replica at the kill | {audit.in_flight_at_kill} |\n"
        f"| of which answered before the kill, rows not yet written | {audit.lost_to_kill} |\n"
        f"| rows expected (answers - both above) | {expected} |\n"
        f"| audit rows of those requests | {audit.rows} (499: {audit.rows_499}) |\n"
        f"| answers of live replicas without a row | {len(audit.missing)} |\n"
        f"| rows without their answer or with another status | {len(audit.wrong)} |\n"
        f"| the publish check's download: answers, rows | {stats.other_downloads}, "
        f"{audit.other_rows} |"
    )
    for problem in (audit.missing + audit.wrong)[:20]:
        print(f"- {problem}")
    if not audit.ok(stats.other_downloads):
        raise SystemExit("the audit does not match the downloads answered")
    print("\nAudit check: rows = downloads answered (less what the SIGKILL lost).")


if __name__ == "__main__":
    main()
