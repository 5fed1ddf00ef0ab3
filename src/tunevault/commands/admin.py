"""`tunevault admin`: the operator's tools across organizations (run where the store is,
like `tunevault keys`): organizations, fine-tunes, deleting any fine-tune, and the log of
those deletions."""

from __future__ import annotations

import json
from typing import Any

import click

from tunevault.client.progress import human
from tunevault.commands.options import settings_from_flags, store_options

JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group()
def admin() -> None:
    """Operator tools across organizations: orgs, fine-tunes, delete, actions."""


@admin.command("orgs")
@store_options
@JSON
def admin_orgs(as_json: bool, **flags: Any) -> None:
    """Every organization: fine-tunes, live keys, source and derived bytes."""
    from tunevault.service import admin as service
    from tunevault.service.context import open_services

    with open_services(settings_from_flags(**flags)) as svc:
        found = service.orgs(svc)
    if as_json:
        click.echo(json.dumps({"data": [o.as_json() for o in found]}))
        return
    for o in found:
        u = o.usage
        click.echo(
            f"{u.org:<24} {u.org_id}  fine-tunes {o.fine_tunes:>5}  keys {o.keys:>4}  "
            f"source {human(u.source_bytes):>10}  derived {human(u.derived_bytes):>10}"
        )


@admin.command("fine-tunes")
@store_options
@click.option("--org", "org_name", help="Only this organization's.")
@JSON
def admin_fine_tunes(org_name: str | None, as_json: bool, **flags: Any) -> None:
    """Every organization's fine-tunes (or one's), oldest first."""
    from tunevault.service import admin as service
    from tunevault.service.context import open_services

    with open_services(settings_from_flags(**flags)) as svc:
        found = service.fine_tunes(svc, org_name)
    if as_json:
        rows = [
            {
                "id": ft.id,
                "org_id": ft.org_id,
                "model_output_name": ft.model_output_name,
                "status": ft.status,
                "created_at": ft.created_at.isoformat(),
            }
            for ft in found
        ]
        click.echo(json.dumps({"data": rows}))
        return
    for ft in found:
        click.echo(f"{ft.id}  {ft.org_id}  {ft.status:<12} {ft.model_output_name}")


@admin.command("delete")
@store_options
@click.argument("ft_id")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@JSON
def admin_delete(ft_id: str, dry_run: bool, as_json: bool, **flags: Any) -> None:
    """Delete a fine-tune of any organization, as its owner's DELETE does (its blobs go at
    the next gc), recorded in `tunevault admin actions`."""
    from tunevault.service import admin as service
    from tunevault.service.context import open_services

    click.echo(f"{'finding' if dry_run else 'deleting'} fine-tune {ft_id}", err=True)
    with open_services(settings_from_flags(**flags)) as svc:
        done = service.delete_fine_tune(svc, ft_id, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(done.as_json()))
        return
    ft = done.fine_tune
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {ft.id} ({ft.model_output_name}) of {ft.org_id} with {done.checkpoints} "
        "checkpoint(s)"
    )


@admin.command("actions")
@store_options
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@JSON
def admin_actions(limit: int, as_json: bool, **flags: Any) -> None:
    """The operator action log, newest first: who deleted what, when."""
    from tunevault.service import admin as service
    from tunevault.service.context import open_services

    with open_services(settings_from_flags(**flags)) as svc:
        found = service.actions(svc, limit)
    rows = [{**a.__dict__, "created_at": a.created_at.isoformat()} for a in found]
    if as_json:
        click.echo(json.dumps({"data": rows}))
        return
    for r in rows:
        click.echo(
            f"{r['created_at']}  {r['actor']:<16} {r['action']} {r['target']} ({r['org_id']})"
        )
