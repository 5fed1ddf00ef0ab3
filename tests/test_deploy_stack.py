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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import httpx
import pytest
import sqlalchemy as sa
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support.deploy import (
    command_of,
    load_compose,
    local_nginx_conf,
    nginx_upstreams,
    tunevault_services,
)
from tests.support.nginx import nginx_binary, serve_nginx
from tests.support.postgres import free_port
from tests.support.publishing import api_client, publish_files
from tests.support.seaweed import run_seaweedfs
from tests.support.server import stop, wait_healthy

TUNEVAULT = [sys.executable, "-m", "tunevault"]


def _variables() -> dict[str, str]:
    """What deploy/.env would hold: fresh secrets."""
    names = ("POSTGRES_PASSWORD", "S3_SECRET_KEY", "S3_ADMIN_SECRET_KEY", "SHARE_SECRET")
    names += ("S3_PRESIGN_SECRET_KEY",)
    access = ("S3_ACCESS_KEY", "S3_ADMIN_ACCESS_KEY", "S3_PRESIGN_ACCESS_KEY")
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


def _localise(
    services: Mapping[str, Any], swaps: Mapping[str, str], root: Path
) -> dict[str, dict[str, str]]:
    """Each tunevault service's environment with container addresses made loopback ones;
    every swap must be used, or the compose file no longer names what this test replaces."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TUNEVAULT_"))}
    base |= {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    envs, used = {}, set()
    for name in tunevault_services({"services": services}):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        for old, new in swaps.items():
            used |= {old for v in env.values() if old in v}
            env = {k: v.replace(old, new) for k, v in env.items()}
        envs[name] = {**base, **env, "TUNEVAULT_DATA_DIR": str(root / name)}
    assert used == set(swaps), f"compose no longer names {set(swaps) - used}"
    return envs


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


@dataclass(frozen=True)
class Stack:
    front: str  # nginx's URL
    token: str  # a read+publish key of organization acme
    services: dict[str, Any]
    envs: dict[str, dict[str, str]]


def _replicas_and_worker(
    stack: contextlib.ExitStack,
    services: dict[str, Any],
    envs: dict[str, dict[str, str]],
    logs: Path,
) -> dict[str, str]:
    """Start serve-1, serve-2 and the worker; the replicas' addresses once both are healthy."""
    replicas = {}
    for name in ("serve-1", "serve-2"):
        port = free_port()
        command = _on_port(command_of(services[name]), port)
        proc = stack.enter_context(_process(command, envs[name], logs / f"{name}.log"))
        replicas[name] = (f"127.0.0.1:{port}", proc)
    for address, proc in replicas.values():
        wait_healthy(f"http://{address}", proc)
    worker = command_of(services["worker"])
    stack.enter_context(_process(worker, envs["worker"], logs / "worker.log"))
    return {name: address for name, (address, _) in replicas.items()}


@contextlib.contextmanager
def _compose_stack(pg_admin_url: str, tmp_path: Path) -> Iterator[Stack]:
    """The compose file's stack in compose's order: storage and database, bucket, migrate,
    a key (`docker compose run --rm migrate keys create ...`), replicas and worker, nginx."""
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
        stack.callback(seaweed.delete_bucket, storage.netloc)
        probe = services["seaweedfs"]["healthcheck"]["test"][-1].split()[-1]  # its healthcheck
        assert httpx.get(seaweed.endpoint_url + urlsplit(probe).path).status_code == 200
        swaps = {
            **dict([_database(pg_admin_url, compose_db)]),
            "http://seaweedfs:8333": seaweed.endpoint_url,
            "172.30.0.0/24": "127.0.0.1/32",  # nginx's network: here, loopback
        }
        envs = _localise(services, swaps, tmp_path)
        _run(command_of(services["migrate"]), envs["migrate"])
        keys = ["keys", "create", "--org", "acme", "--scope", "read", "--scope", "publish"]
        token = json.loads(_run(keys, envs["migrate"]))["token"]
        replicas = _replicas_and_worker(stack, services, envs, tmp_path)
        nginx_dir, port = tmp_path / "nginx", free_port()
        nginx_dir.mkdir()
        upstreams = {u: replicas[u.split(":")[0]] for u in nginx_upstreams()}
        (nginx_dir / "nginx.conf").write_text(local_nginx_conf(upstreams, port, nginx_dir))
        front = stack.enter_context(serve_nginx(nginx_dir / "nginx.conf", nginx_dir, port))
        yield Stack(front=front, token=token, services=services, envs=envs)


def _presign_identity_only_reads(env: Mapping[str, str]) -> None:
    """The replicas' presigning identity, as compose creates it: its key is valid and may
    read (a missing key is 404, not 403), and its PUT and DELETE are refused."""
    storage = urlsplit(env["TUNEVAULT_STORAGE_URL"])
    s3 = boto3.session.Session().client(
        "s3",
        endpoint_url=dict(parse_qsl(storage.query))["endpoint_url"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["TUNEVAULT_S3_PRESIGN_ACCESS_KEY_ID"],
        aws_secret_access_key=env["TUNEVAULT_S3_PRESIGN_SECRET_ACCESS_KEY"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    bucket, key = storage.netloc, storage.path.strip("/") + "/presign-probe"
    for call, status in (
        (lambda: s3.get_object(Bucket=bucket, Key=key), 404),  # may read: there is nothing
        (lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), 403),
        (lambda: s3.delete_object(Bucket=bucket, Key=key), 403),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed")
def test_the_compose_stack_publishes_and_serves_through_nginx(
    pg_admin_url: str, tmp_path: Path
) -> None:
    with _compose_stack(pg_admin_url, tmp_path) as stack:
        assert httpx.get(f"{stack.front}/readyz").status_code == 200  # its identity may write
        _presign_identity_only_reads(stack.envs["serve-1"])
        files = {"config.json": b'{"model_type": "llama"}', "weights.bin": os.urandom(3 << 20)}
        ft_id = publish_files(api_client(stack.front, stack.token), files)
        out = tmp_path / "extracted"
        client = {**os.environ, "TUNEVAULT_URL": stack.front, "TUNEVAULT_API_KEY": stack.token}
        _run(["download", ft_id, "--extract", str(out), "--wait", "120"], client)
        assert {name: (out / name).read_bytes() for name in files} == files
        for name in ("serve-1", "serve-2"):  # nginx spread the requests over both replicas
            assert '"route"' in (tmp_path / f"{name}.log").read_text(), name
        gc = [*command_of(stack.services["gc"]), "--json"]
        report = json.loads(_run(gc, stack.envs["gc"]))
        assert report["blobs_deleted"] == 0  # runs with tunevault's identity; keeps new blobs
