"""Share links: a signed, time-limited, revocable URL for one checkpoint's archive.

The link is `<id>.<signature>`: the id finds the row, the HMAC (keyed by the server's
share secret) over the id, the checkpoint and the expiry proves the server issued exactly
that link. A guessed id has no valid signature; an altered one matches no row or no
signature. The row records who made it, when it dies and who revoked it: the audit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa

from tunevault.errors import ArchiveNotReady, CheckpointNotFound, ShareLinkGone, ShareLinkNotFound
from tunevault.metadata.base import now
from tunevault.models import Principal, ShareLink
from tunevault.service.context import Services
from tunevault.service.downloads import Resolved
from tunevault.settings import Settings

MAX_SECONDS = 30 * 24 * 3600
_KEY_FILE = "share_secret"


def load_secret(settings: Settings) -> bytes:
    """The configured share secret, else one made once and kept (mode 0600) in data_dir.
    Made whole in a temporary file and linked into place: a second process starting at the
    same moment reads the first one's key, never a half-written file."""
    if settings.share_secret is not None:
        return settings.share_secret.get_secret_value().encode()
    path = settings.data_dir / _KEY_FILE
    if not path.exists():
        tmp = settings.data_dir / f".{_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process was first: use its key
        finally:
            tmp.unlink()
    return path.read_bytes().strip()


def _sign(secret: bytes, link_id: str, checkpoint_id: int, expires_at: datetime) -> str:
    msg = f"{link_id}.{checkpoint_id}.{int(expires_at.timestamp())}".encode()
    mac = hmac.new(secret, msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def token(secret: bytes, link: ShareLink) -> str:
    return f"{link.id}.{_sign(secret, link.id, link.checkpoint_id, link.expires_at)}"


def create(
    svc: Services,
    secret: bytes,
    who: Principal,
    checkpoint_id: int,
    seconds: int,
    *,
    ft_id: str | None = None,
) -> tuple[ShareLink, str]:
    """A link to one of the organization's built checkpoint archives (of fine-tune `ft_id`,
    when given); (link, token)."""
    target = svc.store.share_target(who.org_id, checkpoint_id, ft_id)
    if target is None:
        raise CheckpointNotFound("no such checkpoint; the fine-tune page lists them")
    if target.archive_size is None:
        raise ArchiveNotReady(
            f"the archive of {target.ft_id} step {target.step} is still being built; "
            "share it once it is ready"
        )
    created = now().replace(microsecond=0)  # the signature covers whole seconds
    expires = created + timedelta(seconds=seconds)
    try:
        link = svc.store.add_share_link(
            secrets.token_hex(8), who.org_id, checkpoint_id, who.key_id, created, expires
        )
    except sa.exc.IntegrityError as e:  # the checkpoint went in between
        raise CheckpointNotFound("no such checkpoint; the fine-tune page lists them") from e
    return link, token(secret, link)


def open_link(svc: Services, secret: bytes, text: str) -> tuple[ShareLink, Resolved]:
    """What a share token downloads; refused if unknown, altered, expired or revoked."""
    link_id, _, signature = text.partition(".")
    link = svc.store.share_link(link_id[:32])
    expected = _sign(secret, link.id, link.checkpoint_id, link.expires_at) if link else ""
    if link is None or not hmac.compare_digest(expected.encode(), signature.encode()):
        raise ShareLinkNotFound("this share link is not valid; ask its owner for a new one")
    if link.revoked_at is not None:
        raise ShareLinkGone("this share link was revoked; ask its owner for a new one")
    if link.expires_at <= now():
        raise ShareLinkGone(
            f"this share link expired at {link.expires_at:%Y-%m-%d %H:%M:%S} UTC; "
            "ask its owner for a new one"
        )
    ft, rows = svc.store.fine_tune_with_archives(link.org_id, link.ft_id)
    found = [(c, a) for c, a in rows if c.id == link.checkpoint_id]
    if ft is None or not found or found[0][1] is None:
        raise ShareLinkGone("the shared checkpoint was deleted; ask its owner for a new link")
    ckpt, archive = found[0]
    assert archive is not None
    return link, Resolved(ft, ckpt, archive)


def revoke(svc: Services, who: Principal, link_id: str) -> ShareLink | None:
    """Revoke one of the organization's links (again is harmless); None if it has none."""
    return svc.store.revoke_share_link(who.org_id, link_id, who.key_id)


def list_links(svc: Services, org_id: str, *, ft_id: str | None = None) -> list[ShareLink]:
    """The organization's links, newest first (at most metadata.shares.LIST_LIMIT)."""
    return svc.store.list_share_links(org_id, ft_id)
