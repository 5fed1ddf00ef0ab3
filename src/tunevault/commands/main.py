"""The `tunevault` command: a thin shell over the server, the store and the client.

Subcommands are imported when they run, not when the command starts: `tunevault download`
should not pay for numpy (merge), httpx (push) or pydantic-settings (serve).
"""

from __future__ import annotations

import importlib

import click

COMMANDS = {
    "serve": "tunevault.commands.service:serve",
    "worker": "tunevault.commands.service:worker",
    "keys": "tunevault.commands.service:keys",
    "download": "tunevault.commands.download:download",
    "ls": "tunevault.commands.download:ls",
    "checkpoints": "tunevault.commands.download:checkpoints",
    "push": "tunevault.commands.push:push",
    "base": "tunevault.commands.push:base",
    "merge": "tunevault.commands.merge:merge",
    "gc": "tunevault.commands.gc:gc",
}


class LazyGroup(click.Group):
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
