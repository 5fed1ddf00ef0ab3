"""The HTTP side of publishing (docs/publishing.md): blobs first, then manifests.

Blob uploads stream from disk and resume: `HEAD` says how many bytes of an interrupted
upload the server kept, and the `PUT` continues from there. Every call is retried on
connection failures with bounded exponential backoff; calls that are not idempotent
(events or metrics rows without ids) only when the request provably never reached the
server.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tunevault.client.config import ClientConfig, normalize_base_url
from tunevault.client.http import MAX_JSON_BODY, NetworkError, Response, Transport
from tunevault.client.retry import Backoff
from tunevault.errors import TunevaultError, UploadOffsetMismatch
from tunevault.publisher.files import CHUNK, LocalFile, sha256_file
from tunevault.publisher.progress import Progress

USER_AGENT = "tunevault-publisher/0.1"
CHECK_BATCH = 10_000  # the server's limit per blobs/check request


def manifest(files: Iterable[LocalFile], digests: dict[Path, str]) -> list[dict[str, Any]]:
    return [
        {"path": f.path, "size": f.size, "sha256": digests[f.source], "type": "file"} for f in files
    ]


class PublishClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        progress: Progress | None = None,
        retries: int = 6,
        backoff_s: float = 0.5,
        timeout_s: float = 120.0,
        rate_limit: int | None = None,
    ) -> None:
        self.url = normalize_base_url(url)
        self.progress = progress or Progress(enabled=False)
        self.retries = retries
        self.backoff = Backoff(attempts=retries, first=backoff_s)
        self.bytes_sent = 0  # blob bytes handed to the connection, retries included
        self.blobs_sent = 0
        self.rate_limit = rate_limit  # bytes/s of blob upload, None for as fast as possible
        self._next_send = 0.0
        self._http = Transport(
            ClientConfig(self.url, api_key),
            timeout=timeout_s,
            backoff=self.backoff,
            user_agent=USER_AGENT,
        )

    def close(self) -> None:
        """Nothing to release: every request has its own connection (client/http.py)."""

    def __enter__(self) -> PublishClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        time.sleep(self.backoff.pause(attempt + 1, retry_after))

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        idempotent: bool = True,
    ) -> Any:
        """One JSON call; publishing calls are idempotent unless the caller says not."""
        return self._http.json(method, path, body=json, headers=headers, idempotent=idempotent)

    # -- blobs ------------------------------------------------------------------------

    def missing(self, sizes: dict[str, int]) -> set[str]:
        """The digests the server lacks; their sizes let it refuse a publish past the
        organization's quota before anything is uploaded."""
        wanted = sorted(sizes)
        out: set[str] = set()
        for i in range(0, len(wanted), CHECK_BATCH):
            batch = wanted[i : i + CHECK_BATCH]
            body = self.call(
                "POST",
                "/v1/publish/blobs/check",
                json={"sha256": batch, "sizes": [sizes[d] for d in batch]},
            )
            out.update(body["missing"])
        return out

    def remote_offset(self, sha256: str) -> int | None:
        """None when the blob is committed, else the bytes of an upload the server kept."""
        resp = self._http.request("HEAD", f"/v1/publish/blobs/{sha256}")
        resp.close()
        if resp.status == 200:
            return None
        if resp.status == 404:
            return int(resp.header("Upload-Offset") or "0")
        resp.raise_for_error()
        raise AssertionError("unreachable: an error answer raises")

    def upload_blob(self, source: Path, sha256: str, size: int) -> None:
        """Send the bytes the server lacks; a broken upload resumes where the server stopped."""
        offset = self.remote_offset(sha256)
        failures = 0
        while offset is not None:
            start = offset
            try:
                resp = self._http.request(
                    "PUT",
                    f"/v1/publish/blobs/{sha256}",
                    headers={
                        "Upload-Length": str(size),
                        "Upload-Offset": str(start),
                        "Content-Length": str(size - start),
                        "Content-Type": "application/octet-stream",
                    },
                    content=functools.partial(self._read_from, source, start, size),
                    idempotent=False,  # the body is not replayable blindly: re-ask the offset
                )
                offset = self._offset_after(resp, sha256, failures)
            except NetworkError:
                failures += 1
                if failures > self.retries:
                    raise
                self._sleep(failures - 1)
                offset = self.remote_offset(sha256)
                continue
            if offset is None:
                self.blobs_sent += 1
                return
            failures = 0 if offset > start else failures + 1
            if failures > self.retries:
                raise NetworkError(f"upload of {sha256} makes no progress at {offset}")

    def _offset_after(self, resp: Response, sha256: str, failures: int) -> int | None:
        """Where the upload stands after a PUT's answer: None once the blob is committed."""
        if resp.status in (200, 201):
            resp.close()
            return None
        if resp.status == 202:
            try:
                return int(json.loads(resp.read(MAX_JSON_BODY))["offset"])
            finally:
                resp.close()
        try:
            resp.raise_for_error()
        except UploadOffsetMismatch as e:
            header = e.headers.get("Upload-Offset")
            return int(header) if header is not None else self.remote_offset(sha256)
        except TunevaultError as e:
            if e.status != 409:
                raise
            # The server may still be reading our dropped connection's upload: wait.
            self._sleep(failures)
            return self.remote_offset(sha256)
        resp.close()
        raise TunevaultError(f"PUT of blob {sha256} answered HTTP {resp.status}")

    def _read_from(self, source: Path, offset: int, size: int) -> Iterator[bytes]:
        chunk_size = CHUNK if self.rate_limit is None else min(CHUNK, max(self.rate_limit // 8, 1))
        with source.open("rb") as f:
            f.seek(offset)
            left = size - offset
            while left > 0:
                chunk = f.read(min(chunk_size, left))
                if not chunk:
                    raise OSError(f"{source} shrank while being uploaded")
                left -= len(chunk)
                self._throttle(len(chunk))
                self.bytes_sent += len(chunk)
                self.progress.advance(len(chunk))
                yield chunk

    def _throttle(self, n: int) -> None:
        """Pace chunks so that the average stays under `rate_limit`."""
        if self.rate_limit is None:
            return
        now = time.monotonic()
        if self._next_send > now:
            time.sleep(self._next_send - now)
            now = self._next_send
        self._next_send = now + n / self.rate_limit

    def upload_files(self, files: Sequence[LocalFile], digests: dict[Path, str]) -> None:
        """Upload the blobs of `files` (their sha256 by source path) the server lacks."""
        by_digest = {digests[f.source]: f for f in files}
        todo = sorted(self.missing({d: f.size for d, f in by_digest.items()}))
        self.progress.start("uploading", sum(by_digest[d].size for d in todo))
        for digest in todo:
            f = by_digest[digest]
            self.upload_blob(f.source, digest, f.size)
        self.progress.finish()

    # -- fine-tunes -------------------------------------------------------------------

    def create_fine_tune(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """The key makes a retry after a lost answer (or a rerun that reuses it) return
        the fine-tune the first request created, instead of a second one."""
        ft: dict[str, Any] = self.call(
            "POST",
            "/v1/publish/fine-tunes",
            json=body,
            headers={"Idempotency-Key": idempotency_key},
        )
        return ft

    def get_fine_tune(self, ft_id: str) -> dict[str, Any]:
        ft: dict[str, Any] = self.call("GET", f"/v1/fine-tunes/{ft_id}")
        return ft

    def add_checkpoint(
        self, ft_id: str, step: int, kind: str, final: bool, files: list[dict[str, Any]]
    ) -> dict[str, Any]:
        body = {"step": step, "kind": kind, "final": final, "files": files}
        out: dict[str, Any] = self.call(
            "POST", f"/v1/publish/fine-tunes/{ft_id}/checkpoints", json=body
        )
        return out

    def add_events(self, ft_id: str, events: Sequence[dict[str, Any]]) -> None:
        self._append(f"/v1/publish/fine-tunes/{ft_id}/events", "events", events)

    def add_metrics(self, ft_id: str, rows: Sequence[dict[str, Any]]) -> None:
        self._append(f"/v1/publish/fine-tunes/{ft_id}/metrics", "metrics", rows)

    def _append(self, path: str, name: str, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            # The server skips rows whose id it already has: with ids, a retry is safe.
            idempotent = all("id" in row for row in rows)
            self.call("POST", path, json={name: list(rows)}, idempotent=idempotent)

    def set_status(self, ft_id: str, status: str) -> dict[str, Any]:
        out: dict[str, Any] = self.call(
            "POST", f"/v1/publish/fine-tunes/{ft_id}/status", json={"status": status}
        )
        return out

    def register_base_model(self, name: str, files: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = self.call(
            "POST", "/v1/publish/base-models", json={"name": name, "files": files}
        )
        return out

    def list_base_models(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.call("GET", "/v1/publish/base-models")["data"]
        return data


def hash_files(
    files: Sequence[LocalFile],
    progress: Progress,
    cached: Callable[[LocalFile], str | None] = lambda _f: None,
) -> dict[Path, str]:
    """sha256 of each file by source path; `cached` may answer for files already hashed."""
    out: dict[Path, str] = {}
    todo: dict[Path, LocalFile] = {}
    for f in files:
        known = cached(f)
        if known is not None:
            out[f.source] = known
        elif f.source not in out:
            todo[f.source] = f
    progress.start("hashing", sum(f.size for f in todo.values()))
    for source in todo:
        out[source] = sha256_file(source, progress.advance)
    progress.finish()
    return out
