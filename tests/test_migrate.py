"""Schema migrations: `tunevault migrate`, concurrent starts on an empty PostgreSQL, and
processes that refuse an old schema when auto_migrate is off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from tests.support.postgres import create_database
from tests.support.server import run_server, run_servers, stop

# The scripts' one head (get_current_head refuses a branched history).
HEAD = ScriptDirectory(str(resources.files("tunevault.metadata") / "migrations")).get_current_head()


def tunevault(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunevault", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT version_num FROM alembic_version")).first()
            return None if row is None else str(row[0])
    finally:
        engine.dispose()


def test_three_replicas_and_a_worker_start_at_once_on_an_empty_postgresql(
    pg_admin_url: str, tmp_path: Path
) -> None:
    db = create_database(pg_admin_url, "together_start")
    env = {"TUNEVAULT_DATABASE_URL": db, "TUNEVAULT_STORAGE_URL": (tmp_path / "blobs").as_uri()}
    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "tunevault", "worker", "--data-dir", str(tmp_path / "w")],
        env={**os.environ, **env},
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    try:
        dirs = [tmp_path / f"r{i}" for i in range(3)]
        with run_servers(dirs, env) as servers:
            for server in servers:
                assert httpx.get(server.url + "/readyz").status_code == 200
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
    finally:
        stop(worker)
        worker_log.close()
    log = (tmp_path / "worker.log").read_text()
    assert "started" in log and "Traceback" not in log, log
    assert revision(db) == HEAD


def test_migrate_command_is_idempotent(pg_admin_url: str) -> None:
    db = create_database(pg_admin_url, "migrate_cmd")
    env = {"TUNEVAULT_DATABASE_URL": db}
    first = tunevault("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stderr.startswith("migrating postgresql+psycopg://")
    assert f"migrated from empty to {HEAD}" in first.stdout
    again = tunevault("migrate", "--json", env=env)
    assert json.loads(again.stdout) == {
        "database": db,
        "before": HEAD,
        "after": HEAD,
    }


@pytest.mark.parametrize(
    "command",
    [("serve", "--port", "1"), ("worker",), ("keys", "list"), ("gc", "--dry-run")],
)
def test_without_auto_migrate_an_old_schema_is_refused(
    pg_admin_url: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    db = create_database(pg_admin_url, f"old_{command[0]}")
    env = {"TUNEVAULT_DATABASE_URL": db, "TUNEVAULT_AUTO_MIGRATE": "false"}
    args = (*command, "--data-dir", str(tmp_path))
    r = tunevault(*args, env=env)  # an empty database
    assert r.returncode == 1 and "run `tunevault migrate`" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and revision_or_none(db) is None
    tunevault("migrate", env={"TUNEVAULT_DATABASE_URL": db})
    engine = sa.create_engine(db)
    with engine.begin() as conn:  # as a database left by the previous release
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0006'"))
    engine.dispose()
    r = tunevault(*args, env=env)
    assert r.returncode == 1 and "at revision 0006" in r.stderr, r.stderr


def revision_or_none(url: str) -> str | None:
    try:
        return revision(url)
    except sa.exc.ProgrammingError:  # no alembic_version table: nothing was created
        return None


def test_without_auto_migrate_a_current_schema_serves(pg_admin_url: str, tmp_path: Path) -> None:
    db = create_database(pg_admin_url, "current")
    assert tunevault("migrate", env={"TUNEVAULT_DATABASE_URL": db}).returncode == 0
    env = {"TUNEVAULT_DATABASE_URL": db, "TUNEVAULT_AUTO_MIGRATE": "false"}
    with run_server(tmp_path, env=env) as server:
        assert httpx.get(server.url + "/readyz").status_code == 200


def test_concurrent_migrations_on_an_empty_sqlite_file(tmp_path: Path) -> None:
    # Were "table organizations already exists" for all but one.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tunevault", "migrate", "--data-dir", str(tmp_path)],
            env={k: v for k, v in os.environ.items() if not k.startswith("TUNEVAULT_")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    results = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in procs]
    assert [rc for rc, _ in results] == [0] * 6, results
    assert revision(f"sqlite:///{tmp_path / 'tunevault.db'}") == HEAD
