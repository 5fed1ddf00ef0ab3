"""`push --wait`: wait until every archive of a fine-tune is built, then say how to get each.

Each checkpoint the listing shows is asked with a HEAD on the download route (answered
without bytes and not audited as a download), so that the wait is the one `tunevault
download` does: the server's `Retry-After` honoured
(capped), its state shown on stderr, one deadline for them all, and a build that failed
reported with the server's reason.
"""

from __future__ import annotations

import time
from typing import TextIO
from urllib.parse import parse_qs, urlsplit

from tunevault.client.api import CheckpointInfo, Client
from tunevault.client.fetch import Fetcher, RetryPolicy
from tunevault.client.target import DownloadRequest
from tunevault.client.waiting import WaitLine


def wait_built(client: Client, ft_id: str, limit: float, stream: TextIO | None) -> list[str]:
    """Block until every listed archive of `ft_id` is built (or raise ArchiveNotReady when
    `limit` seconds pass); the commands that download them, in listing order."""
    began = time.monotonic()
    commands = []
    for c in client.list_checkpoints(ft_id):
        left = max(limit - (time.monotonic() - began), 0.0)
        request = request_of(ft_id, c)
        label = f"{ft_id} {_kind_of(c.path) or f'step {c.step}'}"
        notice = WaitLine(label, stream) if stream is not None else None
        fetcher = Fetcher(client, request, RetryPolicy(not_ready_timeout=left), notice)
        fetcher.release(fetcher.get({}, method="HEAD"))
        commands.append(download_command(ft_id, c))
    return commands


def request_of(ft_id: str, c: CheckpointInfo) -> DownloadRequest:
    kind = _kind_of(c.path)
    return DownloadRequest(ft_id, None, kind) if kind else DownloadRequest(ft_id, c.step)


def download_command(ft_id: str, c: CheckpointInfo) -> str:
    kind = _kind_of(c.path)
    return f"tunevault download {ft_id}" + (f" --checkpoint {kind}" if kind else f":{c.step}")


def _kind_of(path: str) -> str | None:
    """The `checkpoint=` of a final checkpoint's path, None for an intermediate one."""
    values = parse_qs(urlsplit(path).query).get("checkpoint")
    return values[0] if values else None
