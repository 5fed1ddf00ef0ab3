"""One exit-code table and one way of reporting a failure, for every `tunevault` command.

The table (docs/client.md): 0 success, 1 any other error (a local file, a bug),
2 bad usage or a request refused as invalid, 3 unauthorised, 4 not found,
5 integrity failure, 6 network failure, 7 archive still not ready after waiting,
8 conflict, 9 server error, 130 interrupted. Every failure prints `error: <message>` on
stderr, and with `--json` also one `{"error": {"code", "message"}, "exit_code"}` object
on stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from tunevault.errors import (
    ArchiveNotReady,
    Conflict,
    IntegrityError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RangeNotSatisfiable,
    SchemaOutdated,
    TunevaultError,
    Unauthenticated,
)

EXIT_ERROR, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_INTEGRITY = 1, 2, 3, 4, 5
EXIT_NETWORK, EXIT_NOT_READY, EXIT_CONFLICT, EXIT_SERVER, EXIT_INTERRUPTED = 6, 7, 8, 9, 130

# First match wins: subclasses before their parents.
_TABLE: tuple[tuple[type[TunevaultError], int], ...] = (
    (IntegrityError, EXIT_INTEGRITY),
    (Unauthenticated, EXIT_AUTH),
    (PermissionDenied, EXIT_AUTH),
    (NotFound, EXIT_NOT_FOUND),
    (ArchiveNotReady, EXIT_NOT_READY),
    (Conflict, EXIT_CONFLICT),
    (RangeNotSatisfiable, EXIT_NETWORK),
    (InvalidRequest, EXIT_USAGE),
    (PayloadTooLarge, EXIT_USAGE),
    (SchemaOutdated, EXIT_ERROR),  # this process's own database is behind: local setup
)
# Client-side classes, named by code so that this module imports no client internals.
_BY_CODE = {"network_error": EXIT_NETWORK, "protocol_error": EXIT_NETWORK}


def exit_code(e: BaseException) -> int:
    if isinstance(e, click.UsageError):
        return EXIT_USAGE
    if isinstance(e, KeyboardInterrupt | click.Abort):
        return EXIT_INTERRUPTED
    if not isinstance(e, TunevaultError):
        return EXIT_ERROR
    if e.code in _BY_CODE:
        return _BY_CODE[e.code]
    found = next((code for klass, code in _TABLE if isinstance(e, klass)), None)
    if found is not None:
        return found
    return EXIT_SERVER if e.status >= 500 else EXIT_ERROR


def error_code(e: BaseException) -> str:
    if isinstance(e, TunevaultError):
        return e.code
    if isinstance(e, click.UsageError):
        return "usage_error"
    if isinstance(e, KeyboardInterrupt | click.Abort):
        return "interrupted"
    return "local_error" if isinstance(e, OSError) else "internal_error"


def message(e: BaseException) -> str:
    if isinstance(e, TunevaultError):
        return e.message
    if isinstance(e, click.UsageError):
        hint = ""
        if e.ctx is not None:
            hint = f" (see '{e.ctx.command_path} {e.ctx.help_option_names[0]}')"
        return e.format_message() + hint
    if isinstance(e, click.ClickException):
        return e.format_message()
    if isinstance(e, KeyboardInterrupt | click.Abort):
        return "interrupted; run the same command again to continue where it stopped"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def report(e: BaseException, as_json: bool) -> int:
    """Print the failure (stderr; and stdout with --json) and return its exit code."""
    code = exit_code(e)
    if isinstance(e, click.exceptions.NoArgsIsHelpError):  # a bare group: its help, as asked
        click.echo(e.format_message(), err=True)
        return code
    text = message(e)
    if as_json:
        body = {"error": {"code": error_code(e), "message": text}, "exit_code": code}
        click.echo(json.dumps(body))
    click.echo(f"error: {text}", err=True)
    return code


def wants_json(argv: list[str]) -> bool:
    """`--json` among the options (before a `--`), known even when parsing failed."""
    return "--json" in (argv[: argv.index("--")] if "--" in argv else argv)


def run_main(group: click.Group, argv: list[str] | None, **extra: Any) -> None:
    """Run the CLI group; every failure goes through `report`, and the process exits."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = group.main(args, standalone_mode=False, **extra)
    except (click.ClickException, click.Abort, TunevaultError, OSError, KeyboardInterrupt) as e:
        sys.exit(report(e, wants_json(args)))
    except Exception as e:  # a bug: keep the traceback, still honour --json
        if wants_json(args):
            report(e, True)
        raise
    sys.exit(rv if isinstance(rv, int) else 0)
