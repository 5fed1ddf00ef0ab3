"""The `tunevault` command: a thin shell over the server, the store and the client.

Subcommands are imported when they run, not when the command starts: `tunevault download`
should not pay for numpy (merge), aiohttp (serve) or pydantic-settings (serve).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import click

COMMANDS = {
    "serve": "tunevault.commands.service:serve",
    "worker": "tunevault.commands.service:worker",
    "keys": "tunevault.commands.keys:keys",
    "download": "tunevault.commands.download:download",
    "ls": "tunevault.commands.download:ls",
    "checkpoints": "tunevault.commands.download:checkpoints",
    "push": "tunevault.commands.push:push",
    "base": "tunevault.commands.push:base",
    "merge": "tunevault.commands.merge:merge",
    "gc": "tunevault.commands.gc:gc",
    "migrate": "tunevault.commands.migrate:migrate",
    "share": "tunevault.commands.share:share",
    "usage": "tunevault.commands.usage:usage",
    "retention": "tunevault.commands.retention:retention",
    "admin": "tunevault.commands.admin:admin",
    "audit": "tunevault.commands.audit:audit",
    "pin": "tunevault.commands.pin:pin",
    "unpin": "tunevault.commands.pin:unpin",
}


class LazyGroup(click.Group):
    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        # One exit-code table and one error format for every command.
        from tunevault.client.exitcodes import run_main

        run_main(
            self,
            None if args is None else list(args),
            prog_name=prog_name,
            complete_var=complete_var,
            **extra,
        )
        return None  # run_main exits

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.version_option(package_name="tunevault")
def main() -> None:
    """tunevault: store and download fine-tuned model checkpoints."""
