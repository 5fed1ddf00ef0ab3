"""`tunevault usage`: stored bytes per organization, and its quota on source bytes (run
where the store is, like `tunevault keys`)."""

from __future__ import annotations

import json
from typing import Any

import click

from tunevault.client.progress import human
from tunevault.commands.options import settings_from_flags, store_options


def _quota(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | str | None:
    """A byte count, or "none" (no quota)."""
    if value is None or value.lower() == "none":
        return None if value is None else "none"
    if value.isdigit():
        return int(value)
    raise click.BadParameter(f"{value!r} is neither a byte count nor 'none'")


@click.command("usage")
@store_options
@click.option("--org", "org_name", help="Only this organization.")
@click.option(
    "--set-quota",
    "quota",
    metavar="BYTES|none",
    callback=_quota,
    help="Set the organization's quota on source bytes ('none' removes it); needs --org.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def usage(org_name: str | None, quota: int | str | None, as_json: bool, **flags: Any) -> None:
    """Show each organization's source bytes (uploads), derived bytes (archives, merged
    files) and quota; or set the quota of one."""
    from tunevault.service import usage as service
    from tunevault.service.context import open_services

    if quota is not None and org_name is None:
        raise click.UsageError("--set-quota needs --org NAME: the organization it applies to")
    with open_services(settings_from_flags(**flags)) as svc:
        if quota is not None:
            assert org_name is not None
            found = [service.set_quota(svc, org_name, None if quota == "none" else int(quota))]
        else:
            found = service.usage(svc, org_name)
    if as_json:
        click.echo(json.dumps({"data": [u.as_json() for u in found]}))
        return
    for u in found:
        limit = "none" if u.source_quota_bytes is None else human(u.source_quota_bytes)
        click.echo(
            f"{u.org:<24} source {human(u.source_bytes):>10}  quota {limit:>10}  "
            f"derived {human(u.derived_bytes):>10} (archives {human(u.archive_bytes)}, "
            f"merged {human(u.merged_bytes)}; evicted {u.evicted_archives} archives, "
            f"{human(u.evicted_bytes)}, rebuilt when downloaded)"
        )
