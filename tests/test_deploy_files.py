"""deploy/ checked with the parsers this machine has: compose.yaml (PyYAML, click, the
settings model), nginx.conf (`nginx -t`), the systemd units (`systemd-analyze verify`)
and the Dockerfile. tests/test_deploy_stack.py runs the same commands as processes."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

from tests.support.deploy import (
    DEPLOY,
    check_command,
    check_settings,
    command_of,
    env_file,
    example_variables,
    interpolate,
    load_compose,
    local_nginx_conf,
    nginx_upstreams,
    tunevault_services,
)
from tests.support.nginx import nginx_binary
from tunevault.commands.main import main
from tunevault.settings import Settings

UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALLED = "/opt/tunevault/bin/tunevault"  # where the units expect the venv's entry point


def test_every_compose_command_and_setting_is_real() -> None:
    compose = load_compose(example_variables())
    services = tunevault_services(compose)
    commands = {name: command_of(s)[0] for name, s in services.items()}
    assert sorted(commands.values()) == ["gc", "migrate", "serve", "serve", "worker"]
    for name, service in services.items():
        check_command(command_of(service))
        settings = check_settings(service["environment"])
        assert settings.auto_migrate is False, f"{name} would migrate at start"
    for name in ("serve-1", "serve-2"):
        settings = check_settings(services[name]["environment"])
        assert settings.build_workers == 0
        assert settings.trusted_proxies, f"{name} would ignore X-Forwarded-For from nginx"


def test_a_wrong_command_or_setting_is_caught() -> None:
    """The checks above can fail: the flag deploy.md once named does not exist."""
    with pytest.raises(click.NoSuchOption):
        check_command(["serve", "--build-workers", "0"])
    with pytest.raises(AssertionError, match="build_worker"):
        check_settings({"TUNEVAULT_BUILD_WORKER": "0"})


def _options(command: click.Command) -> dict[str, set[str]]:
    """Each option's name (as Settings would call it) and its flags, over every command."""
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        found: dict[str, set[str]] = {}
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            for option, flags in (_options(sub) if sub is not None else {}).items():
                found.setdefault(option, set()).update(flags)
        return found
    return {
        p.name: {f for f in p.opts if f.startswith("--")}
        for p in command.params
        if isinstance(p, click.Option) and p.name
    }


def test_settings_doc_names_the_settings_that_have_flags() -> None:
    """Most settings are environment only; settings.md says which have flags."""
    flagged = {k: v for k, v in _options(main).items() if k in Settings.model_fields}
    assert set(flagged) == {
        "config",
        "data_dir",
        "database_url",
        "storage_url",
        "host",
        "port",
        "processes",
        "worker_metrics_address",
    }
    intro = (DEPLOY.parent / "docs" / "settings.md").read_text().split("| setting |")[0]
    for flags in flagged.values():
        assert any(f"`{flag}`" in intro for flag in flags), flags


def test_compose_wiring() -> None:
    compose = load_compose(example_variables())
    services = compose["services"]
    edge = compose["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    for name in ("serve-1", "serve-2", "worker"):
        needs = services[name]["depends_on"]
        assert needs["migrate"] == {"condition": "service_completed_successfully"}
        assert needs["bucket"] == {"condition": "service_completed_successfully"}
    for name in ("serve-1", "serve-2"):
        env = services[name]["environment"]
        assert env["TUNEVAULT_TRUSTED_PROXIES"] == edge and "edge" in services[name]["networks"]
    assert services["nginx"]["networks"] == ["edge"]
    upstreams = {u.split(":")[0] for u in nginx_upstreams()}
    assert upstreams == {"serve-1", "serve-2"}
    # The SeaweedFS identities are valid JSON once compose substitutes the secrets.
    identities = json.loads(compose["configs"]["seaweedfs_s3"]["content"])["identities"]
    keys = {i["name"]: i["credentials"][0]["accessKey"] for i in identities}
    serve = services["serve-1"]["environment"]
    assert keys["tunevault"] == serve["AWS_ACCESS_KEY_ID"]
    # Redirect URLs show the signer's key id: a second identity that may only read signs them.
    assert keys["tunevault-presign"] == serve["TUNEVAULT_S3_PRESIGN_ACCESS_KEY_ID"]
    assert keys["tunevault-presign"] != keys["tunevault"]
    actions = {i["name"]: i["actions"] for i in identities}
    assert actions["tunevault-presign"] == ["Read:tunevault"]


def test_compose_refuses_to_start_without_its_secrets() -> None:
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate((DEPLOY / "compose.yaml").read_text(), {})


@pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed")
def test_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    upstreams = {u: f"127.0.0.1:{8000 + i}" for i, u in enumerate(nginx_upstreams())}
    conf = tmp_path / "nginx.conf"
    conf.write_text(local_nginx_conf(upstreams, 8080, tmp_path))
    binary = nginx_binary()
    assert binary is not None
    r = subprocess.run([binary, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    text = conf.read_text()
    for directive in (
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_buffering off;",
        "client_max_body_size 0;",
    ):
        assert directive in text


def _unit(path: Path) -> dict[str, list[str]]:
    """KEY -> values of a unit file (sections flattened; keys may repeat)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_units_run_real_commands_with_real_settings() -> None:
    units = {p.name: _unit(p) for p in UNITS}
    assert set(units) == {
        "tunevault.service",
        "tunevault-worker.service",
        "tunevault-migrate.service",
    }
    assert units["tunevault-migrate.service"]["Type"] == ["oneshot"]
    example = env_file(DEPLOY / "systemd" / "tunevault.env.example")
    for name, unit in units.items():
        (exec_start,) = unit["ExecStart"]
        binary, *args = shlex.split(exec_start)
        assert binary == INSTALLED
        check_command(args)
        assert unit["EnvironmentFile"] == ["/etc/tunevault/tunevault.env"]
        env = dict(v.split("=", 1) for v in unit.get("Environment", []))
        check_settings({**example, **env})
        if name != "tunevault-migrate.service":
            assert unit["Requires"] == ["tunevault-migrate.service"]
            assert "tunevault-migrate.service" in unit["After"][0]
            assert env["TUNEVAULT_AUTO_MIGRATE"] == "false"
    grace = float(example.get("TUNEVAULT_SHUTDOWN_GRACE_SECONDS", "60"))
    assert float(units["tunevault.service"]["TimeoutStopSec"][0]) > grace


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point it at this venv's entry point.
    entry = shutil.which("tunevault", path=str(Path(sys.executable).parent))
    if entry is None:
        pytest.skip("no `tunevault` entry point next to this interpreter")
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED, entry))
    r = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    # Unknown keys and bad values are only warnings for systemd: refuse them here.
    assert not re.search(r"tunevault[\w-]*\.service:\d+:", r.stderr), r.stderr


def test_dockerfile_is_one_unprivileged_image_for_every_command() -> None:
    lines = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM "))]
    stage = lines[lines.index(final) :]
    instr = {
        line.split()[0]: line.split(None, 1)[1] for line in stage if line and line[0].isupper()
    }
    assert instr["USER"].split(":")[0] not in ("root", "0")
    assert json.loads(instr["ENTRYPOINT"]) == ["tunevault"]
    check_command(json.loads(instr["CMD"]))
    assert "/healthz" in instr["HEALTHCHECK"]
    env = dict(re.findall(r"(\w+)=(\S+)", instr["ENV"]))
    check_settings(env)
    scripts = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tunevault"] == "tunevault.commands.main:main"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for copied in re.findall(r"^COPY (?!--)(.+) \S+$", "\n".join(lines), re.M):
        for path in copied.split():
            assert (DEPLOY.parent / path).exists() and f"!{path.rstrip('/')}" in ignore
