"""`tunevault push DIR` and `tunevault base push|ls`: publishing from the command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tunevault.client.api import Client
from tunevault.client.config import DEFAULT_URL, ClientConfig, normalize_base_url
from tunevault.client.progress import human
from tunevault.client.ready import wait_built
from tunevault.commands.retries import retries_option
from tunevault.errors import Unauthenticated
from tunevault.models import Kind
from tunevault.publisher.files import LayoutError, collect
from tunevault.publisher.layouts import detect, model_kind
from tunevault.publisher.progress import Progress
from tunevault.publisher.push import push_plan
from tunevault.publisher.state import STATE_FILE, PushState
from tunevault.publisher.uploader import PublishClient, hash_files, manifest

F = TypeVar("F", bound=Callable[..., Any])
_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


def _connection(fn: F) -> F:
    fn = retries_option(fn)
    # Together's variables are deliberately not read: a push must never go to Together.
    fn = click.option("--api-key", envvar="TUNEVAULT_API_KEY", help="TUNEVAULT_API_KEY")(fn)
    fn = click.option(
        "--url",
        envvar="TUNEVAULT_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Server URL (TUNEVAULT_URL).",
    )(fn)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def parse_rate(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    scale = 1024 ** ("KMG".index(text[-1]) + 1) if text and text[-1] in "KMG" else 1
    try:
        rate = int(float(text.rstrip("KMG")) * scale)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected bytes per second, e.g. 500K or 4M") from None
    if rate <= 0:
        raise click.BadParameter("the rate must be positive")
    return rate


def _client(
    url: str,
    api_key: str | None,
    quiet: bool,
    retries: int,
    rate_limit: int | None = None,
) -> PublishClient:
    """A publishing client; its failures reach the CLI's one handler (client/exitcodes.py)."""
    if not api_key:
        raise Unauthenticated("no API key: pass --api-key or set TUNEVAULT_API_KEY")
    progress = Progress(enabled=False) if quiet else Progress()
    return PublishClient(url, api_key, progress=progress, retries=retries, rate_limit=rate_limit)


@click.command("push")
@click.argument("directory", type=_DIR)
@click.option("--model", help="Base model name (default: the adapter's base_model_name_or_path).")
@click.option("--name", help="The fine-tune's model_output_name (default: the directory name).")
@click.option("--suffix", help="The fine-tune's suffix.")
@click.option(
    "--include-optimizer",
    is_flag=True,
    help="Also publish resume state: optimizer.pt, scheduler.pt, rng_state*.pth, "
    "training_args.bin.",
)
@click.option(
    "--limit-rate",
    callback=lambda _ctx, _param, value: parse_rate(value),
    help="Upload at most this many bytes per second (suffixes K, M, G: powers of 1024).",
)
@click.option("--new", is_flag=True, help=f"Start a new fine-tune, ignoring {STATE_FILE}.")
@click.option(
    "--external-base",
    is_flag=True,
    help="A LoRA whose base model is not in the store: publish the adapter, build no merge.",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    help="Then wait up to this many seconds until every archive of the push is built, "
    "and print the commands that download them.",
)
@_connection
def push(
    directory: Path,
    model: str | None,
    name: str | None,
    suffix: str | None,
    include_optimizer: bool,
    new: bool,
    external_base: bool,
    wait: float | None,
    limit_rate: int | None,
    url: str,
    api_key: str | None,
    as_json: bool,
    retries: int,
) -> None:
    """Publish a training output DIR as a fine-tune and print its id.

    DIR is a Trainer output_dir (checkpoint-N/ plus the final model), a PEFT adapter or a
    full model. Rerunning after an interruption continues the same fine-tune and sends
    only what the server is missing.
    """
    with _client(url, api_key, as_json, retries, limit_rate) as client:
        plan = detect(directory, include_optimizer=include_optimizer)
        if not as_json:
            for note in plan.notes:
                click.echo(f"note: {note}", err=True)
        state = PushState.load(plan.root, client.url, fresh=new)
        result = push_plan(
            client,
            plan,
            state,
            model=model,
            name=name,
            suffix=suffix,
            external_base=external_base,
        )
    if not state.writable:
        click.echo(f"warning: cannot write {state.path}; a rerun starts over", err=True)
    if not as_json:
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(
            f"{'resumed' if result.resumed else 'created'} {result.fine_tune_id}: "
            f"{len(result.checkpoints)} checkpoints, {result.files} files, "
            f"{human(result.bytes_uploaded)} sent of {human(result.bytes_total)}",
            err=True,
        )
    out: dict[str, Any] = {**result.as_json(), "layout": plan.layout}
    if wait is not None:
        reader = Client(config=ClientConfig(normalize_base_url(url), api_key))
        out["downloads"] = wait_built(reader, result.fine_tune_id, wait, sys.stderr)
    if as_json:
        click.echo(json.dumps(out))
        return
    if wait is not None:
        click.echo("every archive is built; download with:", err=True)
        for command in out["downloads"]:
            click.echo(f"  {command}", err=True)
    click.echo(result.fine_tune_id)


@click.group("base")
def base() -> None:
    """Register base models, which LoRA adapters are merged into."""


@base.command("push")
@click.argument("name")
@click.argument("directory", type=_DIR)
@_connection
def base_push(
    name: str, directory: Path, url: str, api_key: str | None, as_json: bool, retries: int
) -> None:
    """Upload the model in DIRECTORY and register it as base model NAME."""
    with _client(url, api_key, as_json, retries) as client:
        if model_kind(directory) != Kind.MODEL_OUTPUT:
            raise LayoutError(f"{directory}: expected config.json and *.safetensors weights")
        files = collect(directory)
        digests = hash_files(files, client.progress)
        client.upload_files(files, digests)
        out = client.register_base_model(name, manifest(files, digests))
    if as_json:
        click.echo(json.dumps({**out, "bytes_uploaded": client.bytes_sent}))
    else:
        click.echo(f"registered {name}: {len(files)} files, {human(client.bytes_sent)} sent")


@base.command("ls")
@_connection
def base_ls(url: str, api_key: str | None, as_json: bool, retries: int) -> None:
    """List the registered base models."""
    with _client(url, api_key, True, retries) as client:
        models = client.list_base_models()
    if as_json:
        click.echo(json.dumps({"data": models}))
        return
    for m in models:
        click.echo(
            f"{m['name']:<40} {m['files']:>5} files {human(m['size']):>12}  {m['created_at']}"
        )
