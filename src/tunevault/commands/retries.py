"""--retries, shared by every command that talks to a server (kept apart from options.py,
so that a client command does not import the server's settings)."""

from __future__ import annotations

from typing import Any

import click

from tunevault.client.retry import Backoff


def retries_option(fn: Any) -> Any:
    return click.option(
        "--retries",
        type=click.IntRange(min=0),
        default=Backoff.attempts,
        show_default=True,
        help="Retries (with backoff) while the server is unreachable or busy.",
    )(fn)
