"""Settings from a TOML file, named by `--config` or `TUNEVAULT_CONFIG`.

The file sits beneath the environment: a flag beats a variable, a variable beats the
file, the file beats the defaults. Its keys are the settings' names (docs/settings.md).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource


class ConfigFileError(ValueError):
    """The config file is missing, unreadable, not TOML, or has a key that is no setting."""


class TomlFile(PydanticBaseSettingsSource):
    """The file the first of `named_by` (flags, then the environment) names as `config`."""

    def __init__(
        self, settings_cls: type[BaseSettings], *named_by: PydanticBaseSettingsSource
    ) -> None:
        super().__init__(settings_cls)
        self.named_by = named_by

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        named = (source().get("config") for source in self.named_by)
        path = next((Path(p) for p in named if p), None)
        return {} if path is None else read(path, set(self.settings_cls.model_fields))


def read(path: Path, settings: set[str]) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigFileError(
            f"cannot read the config file {path} ({e.strerror}): fix --config or TUNEVAULT_CONFIG"
        ) from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"the config file {path} is not TOML: {e}") from e
    unknown = sorted(set(data) - (settings - {"config"}))
    if unknown:
        raise ConfigFileError(
            f"the config file {path} has keys that are not settings: {', '.join(unknown)} "
            "(keys are the names in docs/settings.md: lowercase, no TUNEVAULT_ prefix)"
        )
    return data
