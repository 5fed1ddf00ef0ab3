"""What the commands that open the store share: its options and the settings they make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tunevault.settings import Settings


def settings_from_flags(**flags: Any) -> Settings:
    """Flags override `TUNEVAULT_*` variables, which override defaults."""
    return Settings(**{k: v for k, v in flags.items() if v is not None})


def store_options(fn: Any) -> Any:
    for opt in (
        click.option("--data-dir", type=click.Path(path_type=Path), help="TUNEVAULT_DATA_DIR"),
        click.option("--database-url", help="TUNEVAULT_DATABASE_URL"),
        click.option("--storage-url", help="TUNEVAULT_STORAGE_URL"),
    ):
        fn = opt(fn)
    return fn
