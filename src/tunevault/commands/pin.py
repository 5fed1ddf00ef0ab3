"""`tunevault pin FT[:STEP]` / `tunevault unpin FT[:STEP]`: keep a checkpoint's archives
built whatever the derived budget (run where the store is, like `tunevault usage`)."""

from __future__ import annotations

import json
from typing import Any

import click

from tunevault.commands.options import settings_from_flags, store_options


def _target(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, int | None]:
    """`ft-...` (its final step) or `ft-...:STEP`, as the together CLI writes it."""
    ft_id, _, step = value.partition(":")
    if not ft_id.startswith("ft-") or (step and not step.isdigit()):
        raise click.BadParameter(f"{value!r} is not FT_ID or FT_ID:STEP (e.g. ft-1a2b:40)")
    return ft_id, int(step) if step else None


def _run(target: tuple[str, int | None], pinned: bool, as_json: bool, flags: Any) -> None:
    from tunevault.service.cache import set_pin
    from tunevault.service.context import open_services

    verb = "pinning" if pinned else "unpinning"
    click.echo(f"{verb} {target[0]}{'' if target[1] is None else f':{target[1]}'}", err=True)
    with open_services(settings_from_flags(**flags)) as svc:
        pin = set_pin(svc, target[0], target[1], pinned)
    if as_json:
        click.echo(json.dumps(pin.as_json()))
        return
    state = "pinned: its archives stay built" if pinned else "unpinned: evictable again"
    rebuilt = f"; rebuilding {pin.rebuilding} evicted archives" if pin.rebuilding else ""
    click.echo(f"{pin.ft_id} step {pin.step} {state}{rebuilt}")


@click.command("pin")
@store_options
@click.argument("target", metavar="FT_ID[:STEP]", callback=_target)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def pin(target: tuple[str, int | None], as_json: bool, **flags: Any) -> None:
    """Keep a step of a fine-tune built (default: its final step): the derived budget never
    evicts its archives, and evicted ones are rebuilt now."""
    _run(target, True, as_json, flags)


@click.command("unpin")
@store_options
@click.argument("target", metavar="FT_ID[:STEP]", callback=_target)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def unpin(target: tuple[str, int | None], as_json: bool, **flags: Any) -> None:
    """Let the derived budget evict a pinned step's archives again."""
    _run(target, False, as_json, flags)
