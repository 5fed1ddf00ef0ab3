"""The service side of the CLI: `serve`, `worker`, `keys` (and the options they share)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tunevault.errors import NotFound
from tunevault.models import ApiKey, Scope
from tunevault.settings import Settings


def settings_from_flags(**flags: Any) -> Settings:
    """Flags override `TUNEVAULT_*` variables, which override defaults."""
    return Settings(**{k: v for k, v in flags.items() if v is not None})


def store_options(fn: Any) -> Any:
    for opt in (
        click.option("--data-dir", type=click.Path(path_type=Path), help="TUNEVAULT_DATA_DIR"),
        click.option("--database-url", help="TUNEVAULT_DATABASE_URL"),
        click.option("--storage-url", help="TUNEVAULT_STORAGE_URL"),
    ):
        fn = opt(fn)
    return fn


@click.command()
@store_options
@click.option("--host", help="Bind address (TUNEVAULT_HOST, default 127.0.0.1).")
@click.option("--port", type=int, help="TCP port (TUNEVAULT_PORT, default 8000).")
@click.option(
    "--demo",
    is_flag=True,
    help="Seed a demo organization with real small models "
    "and print a fresh key with commands to try.",
)
def serve(demo: bool, **flags: Any) -> None:
    """Run the HTTP server."""
    from tunevault.server.observability import setup_logging
    from tunevault.server.run import run_server

    settings = settings_from_flags(**flags)
    setup_logging(settings.log_level, settings.log_format)
    try:
        run_server(settings, demo=demo)
    except OSError as e:  # the usual one: the port is taken
        raise click.ClickException(f"cannot serve on {settings.host}:{settings.port}: {e}") from e
    except ValueError as e:
        raise click.ClickException(str(e)) from e


@click.command()
@store_options
def worker(**flags: Any) -> None:
    """Run build jobs (archives, merges) until interrupted; run as many as you like."""
    import signal
    import threading

    from tunevault.server.observability import setup_logging
    from tunevault.services import open_services
    from tunevault.worker import Worker

    settings = settings_from_flags(**flags)
    setup_logging(settings.log_level, settings.log_format)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with open_services(settings) as svc:
        Worker(svc).run(stop)


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@store_options
@click.option("--org", "org_name", required=True, help="Organization name (created if new).")
@click.option("--name", default="default", show_default=True, help="A label for the key.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice([s.value for s in Scope]),
    default=["read"],
    show_default=True,
    help="Repeat for several scopes.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Accepted for scripts: the output is JSON anyway."
)
def keys_create(
    org_name: str, name: str, scopes: tuple[str, ...], as_json: bool, **flags: Any
) -> None:
    """Create a key; the token is printed once and never stored."""
    from tunevault.services import open_services

    with open_services(settings_from_flags(**flags)) as svc:
        org = svc.store.get_org_by_name(org_name) or svc.store.create_org(org_name)
        key, token = svc.store.create_key(org.id, name, [Scope(s) for s in scopes])
    click.echo(
        json.dumps(
            {
                "id": key.id,
                "org": org.name,
                "org_id": org.id,
                "scopes": sorted(scopes),
                "token": token,
            }
        )
    )


@keys.command("list")
@store_options
@click.option("--org", "org_name", help="Only this organization's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def keys_list(org_name: str | None, as_json: bool, **flags: Any) -> None:
    """List keys (never their secrets)."""
    from tunevault.services import open_services

    with open_services(settings_from_flags(**flags)) as svc:
        org_id = None
        if org_name:
            org = svc.store.get_org_by_name(org_name)
            if org is None:
                raise NotFound(f"no organization named {org_name!r}; `keys create --org` makes one")
            org_id = org.id
        keys = svc.store.list_keys(org_id)
        if as_json:
            click.echo(json.dumps({"data": [_key_json(k) for k in keys]}))
            return
        for k in keys:
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            click.echo(f"{k.id}  {k.org_id}  {k.name:<16} {','.join(sorted(k.scopes)):<20} {state}")


@keys.command("revoke")
@store_options
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def keys_revoke(key_id: str, as_json: bool, **flags: Any) -> None:
    """Revoke a key at once."""
    from tunevault.services import open_services

    with open_services(settings_from_flags(**flags)) as svc:
        if not svc.store.revoke_key(key_id):
            raise NotFound(f"no active key {key_id!r}; `tunevault keys list` shows them")
    click.echo(json.dumps({"id": key_id, "revoked": True}) if as_json else f"revoked {key_id}")


def _key_json(k: ApiKey) -> dict[str, Any]:
    revoked = k.revoked_at.isoformat() if k.revoked_at else None
    return {
        "id": k.id,
        "org_id": k.org_id,
        "name": k.name,
        "scopes": sorted(k.scopes),
        "revoked_at": revoked,
    }
