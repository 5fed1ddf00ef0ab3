"""The `tunevault` command: a thin shell over the server, the store and the client."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="tunevault")
def main() -> None:
    """tunevault: store and download fine-tuned model checkpoints."""
