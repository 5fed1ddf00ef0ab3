"""Reading deploy/: the compose file as compose reads it, and its commands checked by click.

No container runtime runs on the test machines, so the tests validate these files with
the parsers the machine has and run their commands and environment as plain processes.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml

from tunevault.commands.main import main
from tunevault.settings import Settings

DEPLOY = Path(__file__).parent.parent.parent / "deploy"
# ${NAME}, ${NAME:?message}, ${NAME:-default}, and $$ (a literal $), as compose reads them.
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::([?-])([^}]*))?\}")


def env_file(path: Path) -> dict[str, str]:
    """NAME=value lines (systemd EnvironmentFile and compose .env alike; # comments)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {name: value for name, value in pairs}


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    def substitute(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, kind, arg = m.groups()
        if name in variables and (variables[name] or kind is None):
            return variables[name]
        if kind == "-":
            return arg
        raise KeyError(f"compose variable {name} is not set: {arg}")

    return _VARIABLE.sub(substitute, text)


def load_compose(variables: Mapping[str, str]) -> dict[str, Any]:
    """deploy/compose.yaml with its variables substituted and its anchors merged."""
    data = yaml.safe_load(interpolate((DEPLOY / "compose.yaml").read_text(), variables))
    assert isinstance(data, dict)
    return data


def example_variables() -> dict[str, str]:
    return env_file(DEPLOY / "env.example")


def tunevault_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the tunevault image (entrypoint `tunevault`)."""
    return {
        name: s
        for name, s in compose["services"].items()
        if str(s.get("image", "")).startswith("tunevault")
    }


def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def check_command(args: list[str]) -> click.Context:
    """Parse `tunevault ARGS` as the CLI would, without running it: raises click.UsageError
    for an unknown command or flag or a bad value; returns the command's context."""
    command: click.Command = main
    ctx = click.Context(main, info_name="tunevault")
    name, rest = "tunevault", list(args)
    while isinstance(command, click.Group):
        if not rest:
            raise click.UsageError(f"`{ctx.command_path}` needs a subcommand")
        name, *rest = rest
        sub = command.get_command(ctx, name)
        if sub is None:
            raise click.UsageError(f"`{ctx.command_path}` has no command {name!r}")
        if isinstance(sub, click.Group):
            ctx = click.Context(sub, info_name=name, parent=ctx)
        command = sub
    return command.make_context(name, rest, parent=ctx)


def check_settings(env: Mapping[str, str]) -> Settings:
    """Every TUNEVAULT_* name is a setting and every value validates."""
    names = {
        k.removeprefix("TUNEVAULT_").lower(): v
        for k, v in env.items()
        if k.startswith("TUNEVAULT_")
    }
    unknown = sorted(set(names) - set(Settings.model_fields))
    assert not unknown, f"not settings: {unknown}"
    return Settings.model_validate(names)


def nginx_upstreams() -> list[str]:
    """The `server HOST:PORT` lines of deploy/nginx.conf's upstream block."""
    return re.findall(r"^\s*server\s+([\w.-]+:\d+)", (DEPLOY / "nginx.conf").read_text(), re.M)


def local_nginx_conf(upstreams: Mapping[str, str], port: int, workdir: Path) -> str:
    """deploy/nginx.conf with its upstreams (`serve-1:8000` -> an address), port, user and
    paths made local; every replacement must match exactly once, so a drift fails here."""
    from tests.support.nginx import temp_paths, worker_user

    text = (DEPLOY / "nginx.conf").read_text()
    swaps = {
        "user nginx;": worker_user(),
        "pid /var/run/nginx.pid;": f"pid {workdir}/nginx.pid;",
        "listen 80;": f"listen 127.0.0.1:{port};",
        "http {": "http {\n    " + temp_paths(workdir),
        **{f"server {upstream} ": f"server {addr} " for upstream, addr in upstreams.items()},
    }
    for old, new in swaps.items():
        assert text.count(old) == 1, f"deploy/nginx.conf: expected {old!r} once"
        text = text.replace(old, new)
    return text
