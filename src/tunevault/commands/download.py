"""Client commands of the `tunevault` CLI: download, ls, checkpoints.

Failures propagate to the CLI's one handler (client/exitcodes.py): one exit-code table
and one error format for every command.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from tunevault.client.api import Client
from tunevault.client.download import download as download_file
from tunevault.client.extract import download_extract
from tunevault.client.fetch import RetryPolicy
from tunevault.client.files import download_files, revision_of
from tunevault.client.progress import Bar
from tunevault.client.ready import download_command
from tunevault.client.retry import Backoff
from tunevault.client.target import CHECKPOINTS, parse_ft_arg
from tunevault.client.waiting import WaitLine
from tunevault.commands.retries import retries_option
from tunevault.errors import FineTuneNotFound, InvalidRequest

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def same_not_found(ft_id: str) -> Iterator[None]:
    """One answer for an unknown fine-tune, whichever route noticed: the download route
    refuses a malformed id as invalid, the others say not found."""
    try:
        yield
    except FineTuneNotFound as e:
        raise FineTuneNotFound(_unknown(ft_id), param="ft_id") from e
    except InvalidRequest as e:
        if e.param != "ft_id":
            raise
        raise FineTuneNotFound(_unknown(ft_id), param="ft_id") from e


def _unknown(ft_id: str) -> str:
    return f"fine-tune {ft_id} not found; `tunevault ls` lists yours"


def _client_options(fn: F) -> F:
    fn = click.option("--api-key", help="API key (TUNEVAULT_API_KEY, else TOGETHER_API_KEY).")(fn)
    fn = click.option(
        "--url", help="Server base URL (TUNEVAULT_URL, else TOGETHER_BASE_URL; /v1 optional)."
    )(fn)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def _file_selection(command: F) -> F:
    """--file/--include/--exclude on `download`: with any of them, the checkpoint's files
    one by one over the Hub file routes (client/files.py), not its archive."""

    @click.option(
        "--file",
        "paths",
        multiple=True,
        metavar="PATH",
        help="Only this file of the checkpoint, not the archive (repeatable); -o is the "
        "directory to put it in.",
    )
    @click.option("--include", multiple=True, metavar="GLOB", help="Only files matching it.")
    @click.option("--exclude", multiple=True, metavar="GLOB", help="No file matching it.")
    @functools.wraps(command)
    def wrapper(
        paths: tuple[str, ...], include: tuple[str, ...], exclude: tuple[str, ...], **kw: Any
    ) -> None:
        if not (paths or include or exclude):
            command(**kw)
            return
        if kw["extract"] is not None or kw["connections"] != 1:
            raise click.UsageError("--file/--include/--exclude take no --extract or --connections")
        ft_id, step = _ft_step(kw["ft_ref"], kw["checkpoint_step"])
        client, as_json = Client(kw["url"], kw["api_key"]), kw["as_json"]
        say = (lambda _line: None) if as_json else functools.partial(click.echo, err=True)

        def action() -> None:
            result = download_files(
                client,
                ft_id,
                revision_of(step, kw["checkpoint"]),
                Path(kw["output"] or "."),
                paths=paths,
                include=include,
                exclude=exclude,
                policy=RetryPolicy(attempts=kw["retries"]),
                say=say,
            )
            if as_json:
                click.echo(json.dumps(result.as_dict()))
            else:
                click.echo(f"{len(result.files)} files in {result.directory}, each verified")

        action()  # errors: the one exit-code table (client/exitcodes.py)

    return cast(F, wrapper)


@click.command()
@click.argument("ft_ref", metavar="FT_ID[:STEP]")
@click.option(
    "--checkpoint",
    type=click.Choice(CHECKPOINTS),
    default="default",
    show_default=True,
    help="Which archive when no step is given: the merged model, the LoRA adapter, "
    "or a full fine-tune's output; default is merged for LoRA jobs, the output otherwise.",
)
@click.option("--checkpoint-step", type=click.IntRange(min=0), help="Same as FT_ID:STEP.")
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    help="File to write, or a directory (existing, or ending in /) to save into under "
    "the server's file name (default: the current directory).",
)
@click.option(
    "--extract",
    type=click.Path(path_type=Path, file_okay=False),
    help="Unpack into this (new or empty) directory while downloading; "
    "the archive is never stored.",
)
@click.option(
    "--connections",
    type=click.IntRange(1, 32),
    default=1,
    show_default=True,
    help="Parallel ranged connections for one archive.",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=RetryPolicy.not_ready_timeout,
    show_default=True,
    help="Seconds to wait for an archive the server is still building (0: do not wait); "
    "the wait is shown on stderr.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=RetryPolicy.attempts,
    show_default=True,
    help=f"Consecutive failed attempts (with backoff up to {RetryPolicy.max_backoff:g} s) "
    "before giving up; any progress resets the count.",
)
@_client_options
@_file_selection
def download(
    ft_ref: str,
    checkpoint: str,
    checkpoint_step: int | None,
    output: str | None,
    extract: Path | None,
    connections: int,
    wait: float,
    retries: int,
    as_json: bool,
    url: str | None,
    api_key: str | None,
) -> None:
    """Download a checkpoint archive: resumable, verified, optionally extracted on the fly;
    with --file/--include/--exclude, some of its files instead, each verified.

    Run the same command again after a failure or ^C: it continues from the exact byte.
    """
    ft_id, step = _ft_step(ft_ref, checkpoint_step)
    if output is not None and extract is not None:
        raise click.UsageError("use either -o or --extract")
    label = f"{ft_id}" + (f":{step}" if step is not None else f" ({checkpoint})")
    bar = Bar(label) if sys.stderr.isatty() and not as_json else None
    client = Client(url, api_key)
    policy = RetryPolicy(attempts=retries, not_ready_timeout=wait)

    with same_not_found(ft_id):
        if extract is not None:
            result = download_extract(
                client,
                ft_id,
                extract,
                step=step,
                checkpoint=checkpoint,
                progress=bar,
                policy=policy,
                notice=WaitLine(label),
            )
        else:
            result = download_file(
                client,
                ft_id,
                step=step,
                checkpoint=checkpoint,
                output=output,
                connections=connections,
                progress=bar,
                policy=policy,
                notice=WaitLine(label),
            )
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    if not result.verified:
        click.echo("warning: the server sent no sha256; only the size was checked", err=True)
    what = f"{result.files} files into" if result.files is not None else "saved"
    click.echo(f"{what} {result.path} ({result.size} bytes, sha256 {result.sha256})")


def _ft_step(ft_ref: str, checkpoint_step: int | None) -> tuple[str, int | None]:
    try:
        ft_id, step = parse_ft_arg(ft_ref)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="FT_ID[:STEP]") from e
    if checkpoint_step is not None:
        if step is not None and step != checkpoint_step:
            raise click.UsageError(f"{ft_ref} and --checkpoint-step {checkpoint_step} disagree")
        step = checkpoint_step
    return ft_id, step


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


@click.command("ls")
@retries_option
@_client_options
def ls(as_json: bool, url: str | None, api_key: str | None, retries: int) -> None:
    """List your fine-tunes."""
    client = Client(url, api_key, backoff=Backoff(attempts=retries))
    fts = client.list_fine_tunes()
    if as_json:
        click.echo(json.dumps({"data": [ft.raw for ft in fts]}))
        return
    rows = [(ft.id, ft.status, ft.training_type, ft.model_output_name, ft.created_at) for ft in fts]
    _table(("ID", "STATUS", "TYPE", "OUTPUT NAME", "CREATED"), rows)


@click.command()
@click.argument("ft_id")
@retries_option
@_client_options
def checkpoints(
    ft_id: str, as_json: bool, url: str | None, api_key: str | None, retries: int
) -> None:
    """List a fine-tune's checkpoints, with the command that downloads each."""
    client = Client(url, api_key, backoff=Backoff(attempts=retries))
    with same_not_found(ft_id):
        ckpts = client.list_checkpoints(ft_id)
    if as_json:
        click.echo(json.dumps({"data": [c.__dict__ for c in ckpts]}))
        return
    rows = [
        (str(c.step), c.checkpoint_type, c.checkpoint, c.created_at, download_command(ft_id, c))
        for c in ckpts
    ]
    _table(("STEP", "TYPE", "CONTENT", "CREATED", "DOWNLOAD WITH"), rows)
