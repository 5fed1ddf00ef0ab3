"""`tunevault keys`: create, list, limit, rotate and revoke API keys (run where the store
is)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from tunevault.commands.durations import parse_duration
from tunevault.commands.options import settings_from_flags, store_options
from tunevault.models import ApiKey, KeyLimitOverrides, Scope

JSON_ACCEPTED = click.option(
    "--json", "as_json", is_flag=True, help="Accepted for scripts: the output is JSON anyway."
)


EXPIRES = click.option(
    "--expires",
    help="The key stops working after this long: 90d, 24h, 30m (default: never).",
)


def limit_options(fn: Any) -> Any:
    for opt in (
        click.option(
            "--requests-per-minute",
            type=click.IntRange(min=0),
            help="This key's request rate per replica (0: no limit; default: the server's "
            "rate_limit_per_minute).",
        ),
        click.option(
            "--max-downloads",
            type=click.IntRange(min=0),
            help="This key's downloads in progress per replica (0: no limit; default: the "
            "server's max_downloads_per_key).",
        ),
    ):
        fn = opt(fn)
    return fn


@click.group()
def keys() -> None:
    """Create, list, limit, rotate and revoke API keys."""


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
@limit_options
@EXPIRES
@JSON_ACCEPTED
def keys_create(
    org_name: str,
    name: str,
    scopes: tuple[str, ...],
    requests_per_minute: int | None,
    max_downloads: int | None,
    expires: str | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Create a key; the token is printed once and never stored."""
    from tunevault.service import accounts
    from tunevault.service.context import open_services

    limits = KeyLimitOverrides(requests_per_minute, max_downloads)
    lifetime = _lifetime(expires, "--expires")
    with open_services(settings_from_flags(**flags)) as svc:
        org, key, token = accounts.create_key(
            svc, org_name, name, [Scope(s) for s in scopes], limits, lifetime
        )
    out = {"id": key.id, "org": org.name, "org_id": org.id, "scopes": sorted(scopes)}
    click.echo(json.dumps({**out, **_limits_json(limits), **_expiry_json(key), "token": token}))


@keys.command("rotate")
@store_options
@click.argument("key_id")
@click.option(
    "--grace",
    default="24h",
    show_default=True,
    help="How long the old key keeps working, for clients to switch: 30m, 24h, 7d.",
)
@EXPIRES
@JSON_ACCEPTED
def keys_rotate(key_id: str, grace: str, expires: str | None, as_json: bool, **flags: Any) -> None:
    """Make a new key with the same organization, name, scopes and limits, and set the old
    one to expire after the grace. The new token is printed once. Without --expires the new
    key lives as long as the old one was made to (never, if it had no expiry)."""
    from tunevault.service import accounts
    from tunevault.service.context import open_services

    old_for = timedelta(seconds=parse_duration(grace, "--grace"))
    lifetime = _lifetime(expires, "--expires")
    click.echo(f"rotating key {key_id}", err=True)
    with open_services(settings_from_flags(**flags)) as svc:
        key, token, old_expires = accounts.rotate_key(svc, key_id, old_for, lifetime)
    replaces = {"id": key_id, "expires_at": _iso(old_expires)}
    click.echo(json.dumps({**_key_json(key), "token": token, "replaces": replaces}))


@keys.command("list")
@store_options
@click.option("--org", "org_name", help="Only this organization's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def keys_list(org_name: str | None, as_json: bool, **flags: Any) -> None:
    """List keys (never their secrets), with their limits ("default": the server's)."""
    from tunevault.service import accounts
    from tunevault.service.context import open_services

    with open_services(settings_from_flags(**flags)) as svc:
        found = accounts.list_keys(svc, org_name)
    if as_json:
        click.echo(json.dumps({"data": [_key_json(k) for k in found]}))
        return
    for k in found:
        state = _state(k)
        rpm = _figure(k.limits.requests_per_minute)
        dls = _figure(k.limits.max_downloads)
        click.echo(
            f"{k.id}  {k.org_id}  {k.name:<16} {','.join(sorted(k.scopes)):<20} {state:<28} "
            f"requests/min={rpm} downloads={dls}"
        )


@keys.command("limits")
@store_options
@click.argument("key_id")
@limit_options
@JSON_ACCEPTED
def keys_limits(
    key_id: str,
    requests_per_minute: int | None,
    max_downloads: int | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Set a key's limits; an option left out goes back to the server's default. Replicas
    apply it within auth_cache_seconds."""
    from tunevault.service import accounts
    from tunevault.service.context import open_services

    limits = KeyLimitOverrides(requests_per_minute, max_downloads)
    with open_services(settings_from_flags(**flags)) as svc:
        accounts.set_key_limits(svc, key_id, limits)
    click.echo(json.dumps({"id": key_id, **_limits_json(limits)}))


@keys.command("revoke")
@store_options
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def keys_revoke(key_id: str, as_json: bool, **flags: Any) -> None:
    """Revoke a key; replicas refuse it within auth_cache_seconds."""
    from tunevault.service import accounts
    from tunevault.service.context import open_services

    with open_services(settings_from_flags(**flags)) as svc:
        accounts.revoke_key(svc, key_id)
    click.echo(json.dumps({"id": key_id, "revoked": True}) if as_json else f"revoked {key_id}")


def _lifetime(text: str | None, option: str) -> timedelta | None:
    return None if text is None else timedelta(seconds=parse_duration(text, option))


def _state(k: ApiKey) -> str:
    if k.revoked_at:
        return f"revoked {k.revoked_at:%Y-%m-%d}"
    if k.expires_at is None:
        return "active"
    verb = "expired" if k.expires_at <= datetime.now(UTC) else "expires"
    return f"{verb} {k.expires_at:%Y-%m-%d %H:%M}Z"


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None


def _expiry_json(k: ApiKey) -> dict[str, str | None]:
    return {"expires_at": _iso(k.expires_at)}


def _figure(value: int | None) -> str:
    return "default" if value is None else ("unlimited" if value == 0 else str(value))


def _key_json(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "org_id": k.org_id,
        "name": k.name,
        "scopes": sorted(k.scopes),
        "revoked_at": _iso(k.revoked_at),
        **_expiry_json(k),
        **_limits_json(k.limits),
    }


def _limits_json(limits: KeyLimitOverrides) -> dict[str, int | None]:
    return {
        "requests_per_minute": limits.requests_per_minute,
        "max_downloads": limits.max_downloads,
    }
