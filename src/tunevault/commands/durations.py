"""Durations on the command line: `90m`, `24h`, `90d` (or plain seconds)."""

from __future__ import annotations

import re

import click

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str) -> int:
    """The duration as seconds; a bad one is refused naming the option and the form."""
    m = re.fullmatch(r"\s*([0-9]{1,7})\s*([smhd]?)\s*", text)
    if not m:
        raise click.BadParameter(
            f"{text!r} is not a duration; write e.g. 90m, 24h or 90d", param_hint=option
        )
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]
