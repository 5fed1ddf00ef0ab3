"""What a download response announces: file name, size, validator and expected digest."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import unquote

from tunevault.client.http import Response
from tunevault.errors import NotFound, TunevaultError

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
CHECKPOINTS = ("merged", "adapter", "model_output_path", "default")
_ARCHIVE_NAME = re.compile(r"-step(\d+)-(merged|adapter|model_output_path)\.tar\.zst$")


class ProtocolError(TunevaultError):
    """The server's answer breaks the download contract (no size, a wrong range)."""

    client_side = True
    status = 502
    error_type = "protocol_error"
    code = "protocol_error"


class WrongCheckpoint(NotFound):
    """The server answered with another checkpoint than the one asked for (a server that
    ignores `merged_step`, or a step whose raw checkpoint is of another kind)."""

    client_side = True
    code = "checkpoint_kind_unavailable"


@dataclass(frozen=True)
class DownloadRequest:
    ft_id: str
    step: int | None = None
    checkpoint: str = "default"

    def params(self) -> dict[str, str]:
        params = {"ft_id": self.ft_id}
        if self.step is None:
            params["checkpoint"] = self.checkpoint
        elif self.checkpoint == "merged":
            # tunevault's extension: the merged model of any step. With checkpoint_step the
            # spec ignores `checkpoint`, so the step goes in a parameter of its own.
            params.update(checkpoint="merged", merged_step=str(self.step))
        else:
            params["checkpoint_step"] = str(self.step)
        return params

    def check_answer(self, filename: str) -> None:
        """Refuse an archive, named `<name>-step<N>-<kind>.tar.zst` by the server, of
        another step or kind than asked for; other names cannot be checked."""
        m = _ARCHIVE_NAME.search(filename)
        if m is None:
            return
        step, kind = int(m.group(1)), m.group(2)
        want_kind = None if self.checkpoint == "default" else self.checkpoint
        if (want_kind is None or kind == want_kind) and self.step in (None, step):
            return
        asked = f"the {want_kind or 'raw'} checkpoint" + (
            f" of step {self.step}" if self.step is not None else ""
        )
        hint = (
            f"this server does not merge intermediate steps: download {self.ft_id}:{self.step} "
            "--checkpoint adapter and merge it with `tunevault merge`"
            if want_kind == "merged" and self.step is not None
            else f"`tunevault checkpoints {self.ft_id}` lists what there is"
        )
        raise WrongCheckpoint(
            f"asked for {asked} of {self.ft_id}, but the server sent {filename} "
            f"({kind}, step {step}); refusing it: {hint}"
        )

    def identity(self, base_url: str) -> str:
        step = "" if self.step is None else str(self.step)
        return f"{base_url} {self.ft_id} {step} {self.checkpoint}"

    def fallback_name(self, output_name: str | None) -> str:
        base = safe_filename((output_name or "").rsplit("/", 1)[-1]) or self.ft_id
        step = "" if self.step is None else f"-step{self.step}"
        kind = "" if self.step is not None else f"-{self.checkpoint}"
        return f"{base}{step}{kind}.tar.zst"


def parse_ft_arg(text: str) -> tuple[str, int | None]:
    """`ft-...` or `ft-...:STEP`."""
    ft_id, colon, step = text.strip().partition(":")
    if not ft_id:
        raise ValueError("a fine-tune id is required, e.g. ft-1234 or ft-1234:500")
    if not colon:
        return ft_id, None
    if not step.isdigit():
        raise ValueError(f"the step after ':' must be a number, got {step!r}")
    return ft_id, int(step)


def safe_filename(name: str) -> str:
    """A plain file name: no directories, no leading dot, conservative characters only."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return _SAFE.sub("_", name).lstrip(".")[:200]


def disposition_filename(header: str | None) -> str | None:
    if not header:
        return None
    star = re.search(r"filename\*\s*=\s*[^']*'[^']*'([^;]+)", header, re.IGNORECASE)
    if star:
        return safe_filename(unquote(star.group(1).strip())) or None
    plain = re.search(r'filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]+))', header, re.IGNORECASE)
    if not plain:
        return None
    value = plain.group(1) if plain.group(1) is not None else plain.group(2).strip()
    return safe_filename(value.replace('\\"', '"')) or None


def strong_etag(resp: Response) -> str | None:
    etag = resp.header("ETag")
    if etag is None or etag.startswith("W/") or not etag.startswith('"'):
        return None  # weak validators cannot be used with If-Range (RFC 9110 13.1.5)
    return etag


def expected_sha256(resp: Response) -> str | None:
    """From `Repr-Digest: sha-256=:b64:` (any hop), else an ETag that is a sha256."""
    for headers in (resp.headers(), *reversed(resp.hops)):
        lowered = {k.lower(): v for k, v in headers.items()}
        digest = lowered.get("repr-digest")
        if digest:
            m = re.search(r"sha-256=:([A-Za-z0-9+/=]+):", digest)
            if m:
                try:
                    return base64.b64decode(m.group(1), validate=True).hex()
                except (binascii.Error, ValueError):
                    pass
    for headers in (resp.headers(), *reversed(resp.hops)):
        lowered = {k.lower(): v for k, v in headers.items()}
        etag = lowered.get("etag", "").strip('"')
        if _SHA256_HEX.match(etag):
            return etag
    return None


def content_range(resp: Response) -> tuple[int, int, int]:
    """(start, end exclusive, total) of a 206."""
    m = _CONTENT_RANGE.match(resp.header("Content-Range") or "")
    if not m:
        raise ProtocolError(f"206 without a usable Content-Range: {resp.header('Content-Range')!r}")
    start, last, total = (int(x) for x in m.groups())
    return start, last + 1, total


def full_size(resp: Response) -> int:
    """The representation's size, from Content-Range (206) or Content-Length (200)."""
    if resp.status == 206:
        return content_range(resp)[2]
    length = resp.header("Content-Length")
    if length is None or not length.strip().isdigit():
        raise ProtocolError("the server did not announce the archive's size (Content-Length)")
    return int(length)
