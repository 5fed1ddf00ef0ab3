"""`tunevault audit prune`: delete download audit rows past their retention (run where
the store is, like `tunevault keys`; a cron job beside `tunevault gc`)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import click

from tunevault.commands.durations import parse_duration
from tunevault.commands.options import settings_from_flags, store_options


@click.group()
def audit() -> None:
    """The download audit's retention."""


@audit.command("prune")
@store_options
@click.option("--older-than", required=True, help="Delete rows older than this: 90d, 24h.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def audit_prune(older_than: str, dry_run: bool, as_json: bool, **flags: Any) -> None:
    """Delete download audit rows older than --older-than, a batch per transaction."""
    from tunevault.service.auditprune import prune_audit
    from tunevault.service.context import open_services

    age = timedelta(seconds=parse_duration(older_than, "--older-than"))
    click.echo(f"{'counting' if dry_run else 'pruning'} audit rows older than {age}", err=True)
    with open_services(settings_from_flags(**flags)) as svc:
        done = prune_audit(svc, age, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(done.as_json()))
        return
    for org_id, n in sorted(done.by_org.items()):
        click.echo(f"{org_id}  {n} row(s) before {done.cutoff:%Y-%m-%d %H:%M}Z")
    total = sum(done.by_org.values())
    click.echo(f"would delete {total} row(s)" if dry_run else f"deleted {done.deleted} row(s)")
