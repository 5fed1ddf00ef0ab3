"""`tunevault share`: make (or revoke) a share link to one checkpoint's archive, a URL that
downloads with curl and no key until it expires (docs/console.md)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import click

from tunevault.client.api import Client
from tunevault.client.retry import Backoff
from tunevault.client.target import CHECKPOINTS, parse_ft_arg
from tunevault.commands.download import _client_options, same_not_found
from tunevault.commands.durations import parse_duration
from tunevault.commands.retries import retries_option


def parse_expires(text: str) -> int:
    """`90m`, `24h`, `7d` (or plain seconds) as seconds."""
    return parse_duration(text, "--expires")


def _print(link: dict[str, Any], as_json: bool, verb: str) -> None:
    if as_json:
        click.echo(json.dumps(link))
        return
    click.echo(
        f"{verb} share link {link['id']} to {link['ft_id']} step {link['step']} "
        f"({link['checkpoint']}), expires {link['expires_at']}",
        err=True,
    )
    click.echo(link["url"])


@click.command()
@click.argument("ft_ref", metavar="FT_ID[:STEP]", required=False)
@click.option(
    "--checkpoint",
    type=click.Choice(CHECKPOINTS),
    default="default",
    show_default=True,
    help="Which archive when no step is given (as for `tunevault download`).",
)
@click.option(
    "--expires",
    default="24h",
    show_default=True,
    help="How long the link works: 90m, 24h, 7d (1 minute to 30 days).",
)
@click.option("--revoke", "revoke_id", metavar="SHARE_ID", help="Revoke this share link instead.")
@retries_option
@_client_options
def share(
    ft_ref: str | None,
    checkpoint: str,
    expires: str,
    revoke_id: str | None,
    as_json: bool,
    url: str | None,
    api_key: str | None,
    retries: int,
) -> None:
    """Print a URL that downloads one checkpoint's archive with no key (publish scope).

    Anyone holding the URL can download until it expires or is revoked; it is signed, so
    an altered URL is refused.
    """
    if (ft_ref is None) == (revoke_id is None):
        raise click.UsageError("give FT_ID[:STEP] to share, or --revoke SHARE_ID")
    client = Client(url, api_key, backoff=Backoff(attempts=retries))
    if revoke_id is not None:
        click.echo(f"revoking share link {revoke_id} ...", err=True)
        path = f"/v1/shares/{quote(revoke_id, safe='')}"
        _print(client.transport.json("DELETE", path), as_json, "revoked")
        return
    assert ft_ref is not None
    try:
        ft_id, step = parse_ft_arg(ft_ref)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="FT_ID[:STEP]") from e
    body: dict[str, Any] = {"ft_id": ft_id, "expires_in": parse_expires(expires)}
    if step is not None:
        body["checkpoint_step"] = step
    else:
        body["checkpoint"] = checkpoint
    click.echo(f"making a share link to {ft_ref} for {expires} ...", err=True)
    with same_not_found(ft_id):
        link = client.transport.json("POST", "/v1/shares", body=body)
    _print(link, as_json, "made")
