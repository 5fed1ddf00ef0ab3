"""deploy/compose.yaml's stack as plain processes on loopback (no container runtime here).

The commands and environment come from the compose file itself; only what names a
container (host names, ports, nginx's network, data directories) is made local, and each
such replacement must match, so a compose file that drifts fails this test. SeaweedFS gets
the compose file's identities, so tunevault runs with its own, bucket-scoped one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from tests.support.deploy import command_of, load_compose, local_nginx_conf, nginx_upstreams
from tests.support.nginx import nginx_binary, serve_nginx
from tests.support.postgres import free_port
from tests.support.publishing import api_client, publish_files
from tests.support.seaweed import run_seaweedfs
from tests.support.server import stop, wait_healthy

TUNEVAULT = [sys.executable, "-m", "tunevault"]


def _variables() -> dict[str, str]:
    """What deploy/.env would hold: fresh secrets."""
    names = ("POSTGRES_PASSWORD", "S3_SECRET_KEY", "S3_ADMIN_SECRET_KEY", "SHARE_SECRET")
    access = ("S3_ACCESS_KEY", "S3_ADMIN_ACCESS_KEY")
    keys = {n: "TV" + secrets.token_hex(9).upper() for n in access}
    return {**keys, **{n: secrets.token_hex(16) for n in names}}


def _database(admin_url: str, compose_url: str) -> tuple[str, str]:
    """A database owned by the compose file's role; (compose's address, its local one)."""
    name = f"stack_{secrets.token_hex(4)}"
    url = sa.make_url(compose_url)
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        role = {"r": url.username}
        if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), role).first() is None:
            conn.execute(sa.text(f'CREATE ROLE "{url.username}" LOGIN'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}" OWNER "{url.username}"'))
    engine.dispose()
    admin = sa.make_url(admin_url)
    return f"@{url.host}:{url.port}/{url.database}", f"@{admin.host}:{admin.port}/{name}"


def _localise(env: Mapping[str, Any], swaps: Mapping[str, str], data_dir: Path) -> dict[str, str]:
    """A service's environment with container addresses replaced by loopback ones."""
    out = {k: str(v) for k, v in env.items()}
    for old, new in swaps.items():
        hits = [k for k, v in out.items() if old in v]
        assert hits or old == "172.30.0.0/24", f"compose no longer names {old}"
        out.update({k: out[k].replace(old, new) for k in hits})
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TUNEVAULT_"))}
    aws_files = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    return {**base, **aws_files, **out, "TUNEVAULT_DATA_DIR": str(data_dir)}


def _on_port(command: list[str], port: int) -> list[str]:
    values = {"--host": "127.0.0.1", "--port": str(port)}
    return [values.get(command[i - 1], a) if i else a for i, a in enumerate(command)]


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([*TUNEVAULT, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc)


def _run(args: list[str], env: dict[str, str]) -> str:
    r = subprocess.run([*TUNEVAULT, *args], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed")
def test_the_compose_stack_publishes_and_serves_through_nginx(
    pg_admin_url: str, tmp_path: Path
) -> None:
    compose = load_compose(_variables())
    services = compose["services"]
    identities = json.loads(compose["configs"]["seaweedfs_s3"]["content"])["identities"]
    storage = urlsplit(services["migrate"]["environment"]["TUNEVAULT_STORAGE_URL"])
    compose_db = services["migrate"]["environment"]["TUNEVAULT_DATABASE_URL"]
    with (
        run_seaweedfs(tmp_path / "seaweed", identities=identities) as seaweed,
        contextlib.ExitStack() as stack,
    ):
        seaweed.admin.create_bucket(Bucket=storage.netloc)  # what the `bucket` service does
        probe = services["seaweedfs"]["healthcheck"]["test"][-1].split()[-1]  # its healthcheck
        assert httpx.get(seaweed.endpoint_url + urlsplit(probe).path).status_code == 200
        stack.callback(seaweed.delete_bucket, storage.netloc)
        swaps = {
            **dict([_database(pg_admin_url, compose_db)]),
            "http://seaweedfs:8333": seaweed.endpoint_url,
            "172.30.0.0/24": "127.0.0.1/32",  # nginx's network: here, loopback
        }

        def env(name: str) -> dict[str, str]:
            return _localise(services[name]["environment"], swaps, tmp_path / name)

        _run(command_of(services["migrate"]), env("migrate"))
        # `docker compose run --rm migrate keys create ...`, as deploy.md says.
        keys = ["keys", "create", "--org", "acme", "--scope", "read", "--scope", "publish"]
        token = json.loads(_run(keys, env("migrate")))["token"]
        replicas = {}
        for name in ("serve-1", "serve-2"):
            port = free_port()
            command = _on_port(command_of(services[name]), port)
            proc = stack.enter_context(_process(command, env(name), tmp_path / f"{name}.log"))
            replicas[name] = (f"127.0.0.1:{port}", proc)
        for address, proc in replicas.values():
            wait_healthy(f"http://{address}", proc)
        worker = command_of(services["worker"])
        stack.enter_context(_process(worker, env("worker"), tmp_path / "worker.log"))
        nginx_dir = tmp_path / "nginx"
        nginx_dir.mkdir()
        port = free_port()
        upstreams = {u: replicas[u.split(":")[0]][0] for u in nginx_upstreams()}
        (nginx_dir / "nginx.conf").write_text(local_nginx_conf(upstreams, port, nginx_dir))
        front = stack.enter_context(serve_nginx(nginx_dir / "nginx.conf", nginx_dir, port))

        assert httpx.get(f"{front}/readyz").status_code == 200  # bucket writable by its identity
        files = {"config.json": b'{"model_type": "llama"}', "weights.bin": os.urandom(3 << 20)}
        ft_id = publish_files(api_client(front, token), files)
        out = tmp_path / "extracted"
        client = {**os.environ, "TUNEVAULT_URL": front, "TUNEVAULT_API_KEY": token}
        _run(["download", ft_id, "--extract", str(out), "--wait", "120"], client)
        assert {name: (out / name).read_bytes() for name in files} == files
        for name in replicas:  # nginx spread the requests over both replicas
            assert '"route"' in (tmp_path / f"{name}.log").read_text(), name
        report = json.loads(_run([*command_of(services["gc"]), "--json"], env("gc")))
        assert report["blobs_deleted"] == 0  # runs with tunevault's identity; keeps new blobs
