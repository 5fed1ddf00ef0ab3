"""`tunevault retention`: set the retention policy of an organization or one of its
fine-tunes (run where the store is); `tunevault gc` applies it."""

from __future__ import annotations

import json
from typing import Any

import click

from tunevault.commands.options import settings_from_flags, store_options


def _rule(_ctx: click.Context, param: click.Parameter, value: str | None) -> int | str | None:
    """A count, "none" (no rule) or "inherit" (a fine-tune: its organization's rule)."""
    if value is None or value.lower() in ("none", "inherit"):
        return None if value is None else value.lower()
    if value.isdigit():
        return int(value)
    raise click.BadParameter(f"{value!r} is neither a whole number, 'none' nor 'inherit'")


@click.command("retention")
@store_options
@click.option("--org", "org_name", required=True, help="The organization.")
@click.option("--fine-tune", "ft_id", help="Only this fine-tune of it (overrides the org's).")
@click.option(
    "--keep-last",
    metavar="N|none|inherit",
    callback=_rule,
    help="Keep the newest N intermediate steps (default: none for an organization, "
    "inherit for a fine-tune).",
)
@click.option(
    "--max-age-days",
    metavar="D|none|inherit",
    callback=_rule,
    help="Drop intermediate steps older than D days (defaults as for --keep-last).",
)
@click.option("--json", "as_json", is_flag=True, help="Accepted for scripts: the output is JSON.")
def retention(
    org_name: str,
    ft_id: str | None,
    keep_last: int | str | None,
    max_age_days: int | str | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Set which intermediate checkpoints `tunevault gc` drops; final checkpoints are
    always kept. A rule left out goes back to its default."""
    from tunevault.models import Retention
    from tunevault.service import retention as service
    from tunevault.service.context import open_services

    out: dict[str, Any] = {"org": org_name, "fine_tune": ft_id}
    with open_services(settings_from_flags(**flags)) as svc:
        if ft_id is not None:
            keep, age = _given(keep_last, service.INHERIT), _given(max_age_days, service.INHERIT)
            service.set_fine_tune_policy(svc, org_name, ft_id, keep, age)
        else:
            if service.INHERIT in (keep_last, max_age_days):
                raise click.UsageError("'inherit' applies to a fine-tune: add --fine-tune ID")
            keep, age = _given(keep_last, service.NONE), _given(max_age_days, service.NONE)
            service.set_org_policy(svc, org_name, Retention(_count(keep), _count(age)))
    click.echo(json.dumps({**out, "keep_last": keep, "max_age_days": age}))


def _given(rule: int | str | None, default: str) -> int | str:
    return default if rule is None else rule  # 0 is a rule: keep no intermediate step


def _count(rule: int | str) -> int | None:
    return None if rule == "none" else int(rule)
