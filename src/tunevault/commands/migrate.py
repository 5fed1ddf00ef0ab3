"""`tunevault migrate`: bring the metadata database to the schema this version needs."""

from __future__ import annotations

import json
from typing import Any

import click

from tunevault.commands.options import settings_from_flags, store_options


@click.command("migrate")
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print the revisions as JSON.")
def migrate(as_json: bool, **flags: Any) -> None:
    """Migrate the database schema to the newest revision, then exit.

    Idempotent, and safe to run while servers and workers run or start (on PostgreSQL
    migrations take an advisory lock). Run it in a release step with
    TUNEVAULT_AUTO_MIGRATE=false on the long-running processes.
    """
    from tunevault.service.schema import database_label, migrate_database

    settings = settings_from_flags(**flags)
    label = database_label(settings)
    if not as_json:
        click.echo(f"migrating {label} ...", err=True)
    before, after = migrate_database(settings)
    if as_json:
        click.echo(json.dumps({"database": label, "before": before, "after": after}))
    elif before == after:
        click.echo(f"schema already at {after}; nothing to do")
    else:
        click.echo(f"schema migrated from {before or 'empty'} to {after}")
