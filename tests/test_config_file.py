"""The TOML config file: beneath the environment, above the defaults; a bad one is refused
with a message naming the fix, and never echoes a value (it may be a secret)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tunevault.commands.options import settings_from_flags
from tunevault.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TUNEVAULT_"):
            monkeypatch.delenv(name)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tunevault.toml"
    path.write_text(text)
    return path


def test_flags_beat_the_environment_which_beats_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write(
        tmp_path,
        'host = "0.0.0.0"\nport = 9001\nbuild_workers = 0\n'
        'trusted_proxies = ["10.0.0.0/8", "192.168.1.7"]\nserve_mode = "redirect"\n',
    )
    monkeypatch.setenv("TUNEVAULT_CONFIG", str(config))
    monkeypatch.setenv("TUNEVAULT_PORT", "9002")
    monkeypatch.setenv("TUNEVAULT_SERVE_MODE", "proxy")
    s = Settings()
    assert (s.host, s.port, s.build_workers, s.serve_mode) == ("0.0.0.0", 9002, 0, "proxy")
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "192.168.1.7/32"]
    assert settings_from_flags(port=9003, host=None).port == 9003


def test_the_flag_names_a_file_for_a_real_command(tmp_path: Path) -> None:
    config = _write(tmp_path, f'data_dir = "{tmp_path / "from-file"}"\n')
    base = {k: v for k, v in os.environ.items() if not k.startswith("TUNEVAULT_")}

    def migrate(**env: str) -> str:
        r = subprocess.run(
            [sys.executable, "-m", "tunevault", "migrate", "--config", str(config), "--json"],
            env={**base, **env},
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        return str(json.loads(r.stdout)["database"])

    assert migrate() == f"sqlite:///{tmp_path / 'from-file' / 'tunevault.db'}"
    env_dir = tmp_path / "from-env"
    assert migrate(TUNEVAULT_DATA_DIR=str(env_dir)) == f"sqlite:///{env_dir / 'tunevault.db'}"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('databse_url = "sqlite://"\n', "not settings: databse_url"),
        ('config = "other.toml"\n', "not settings: config"),
        ("port = \n", "is not TOML"),
        (None, "fix --config or TUNEVAULT_CONFIG"),
    ],
)
def test_a_bad_file_is_refused_naming_the_fix(tmp_path: Path, text: str | None, says: str) -> None:
    config = _write(tmp_path, text) if text is not None else tmp_path / "missing.toml"
    with pytest.raises(click.ClickException, match=says):
        settings_from_flags(config=config)


def test_a_bad_value_is_named_but_not_echoed(tmp_path: Path) -> None:
    config = _write(tmp_path, 'port = "hunter2-not-a-port"\n')
    with pytest.raises(click.ClickException) as raised:
        settings_from_flags(config=config)
    message = raised.value.message
    assert "port" in message and "hunter2" not in message and "docs/settings.md" in message
