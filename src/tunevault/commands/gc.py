"""`tunevault gc`: free the storage no manifest or archive refers to (see tunevault.service.gc)."""

from __future__ import annotations

import json
from typing import Any

import click

from tunevault.commands.options import settings_from_flags, store_options


@click.command("gc")
@store_options
@click.option(
    "--grace-hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="Keep blobs recorded, and scratch files touched, less than this long ago.",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def gc(grace_hours: float, dry_run: bool, as_json: bool, **flags: Any) -> None:
    """Drop the intermediate checkpoints retention policies let go (listed), then delete
    unreferenced blobs and archives, stale partial uploads and scratch files, and
    abandoned S3 multipart uploads; with audit_retention_days set, old audit rows too.

    Safe while servers and workers run.
    """
    from tunevault.service.context import open_services
    from tunevault.service.gc import collect

    settings = settings_from_flags(**flags)
    with open_services(settings) as svc:
        report = collect(svc, grace_seconds=grace_hours * 3600, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    for d in report.checkpoints_dropped:
        click.echo(
            f"{'would drop' if dry_run else 'dropped'} {d.ft_id} step {d.step} "
            f"({', '.join(d.kinds)}): {d.reason}"
        )
    for e in report.archives_evicted:
        click.echo(
            f"{'would evict' if dry_run else 'evicted'} the {e.kind} archive of {e.ft_id} "
            f"step {e.step} ({e.freed_bytes / 2**20:.1f} MiB): over the derived budget"
        )
    verb = "would free" if dry_run else "freed"
    click.echo(
        f"{verb} {report.freed_bytes / 2**20:.1f} MiB: {report.blobs_deleted} blobs, "
        f"{report.archives_deleted} archives, {report.debris_deleted} stale scratch files, "
        f"{report.writes_aborted} abandoned S3 multipart uploads; "
        f"{report.blobs_registered} unrecorded blobs now under the grace period"
    )
    if settings.audit_retention_days:
        click.echo(
            f"{'would delete' if dry_run else 'deleted'} {report.audit_rows_pruned} download "
            f"audit rows older than {settings.audit_retention_days:g} days"
        )
