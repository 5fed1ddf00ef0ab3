"""What the commands that open the store share: its options and the settings they make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from tunevault.configfile import ConfigFileError
from tunevault.settings import Settings


def settings_from_flags(**flags: Any) -> Settings:
    """Flags override `TUNEVAULT_*` variables, which override the config file, then
    defaults. A bad value is named without echoing it: it may be a secret."""
    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    except ConfigFileError as e:
        raise click.ClickException(str(e)) from e
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise click.ClickException(
            f"invalid settings ({bad}): fix the TUNEVAULT_* variable, the config file or "
            "the flag (docs/settings.md)"
        ) from e


def store_options(fn: Any) -> Any:
    for opt in (
        click.option("--data-dir", type=click.Path(path_type=Path), help="TUNEVAULT_DATA_DIR"),
        click.option("--database-url", help="TUNEVAULT_DATABASE_URL"),
        click.option("--storage-url", help="TUNEVAULT_STORAGE_URL"),
        click.option(
            "--config",
            type=click.Path(path_type=Path, dir_okay=False),
            help="A TOML file of settings, beneath the environment (TUNEVAULT_CONFIG).",
        ),
    ):
        fn = opt(fn)
    return fn
