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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from tunevault.errors import ArchiveNotReady, CheckpointNotFound, ShareLinkGone, ShareLinkNotFound
from tunevault.metadata import tables as t
from tunevault.metadata.base import now
from tunevault.models import Kind, Principal
from tunevault.service.context import Services
from tunevault.service.downloads import Resolved
from tunevault.settings import Settings

MAX_SECONDS = 30 * 24 * 3600
_KEY_FILE = "share_secret"


@dataclass(frozen=True)
class ShareLink:
    id: str
    org_id: str
    checkpoint_id: int
    ft_id: str
    step: int
    kind: Kind
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None

    @property
    def audit_key(self) -> str:
        """What the download audit records as the downloader's key."""
        return f"share:{self.id}"


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


def _select() -> sa.Select[Any]:
    s, c = t.share_links.c, t.checkpoints.c
    return sa.select(t.share_links, c.ft_id, c.step, c.kind).select_from(
        t.share_links.join(t.checkpoints, c.id == s.checkpoint_id)
    )


def _link(m: Any) -> ShareLink:
    fields = {k: m[k] for k in ShareLink.__dataclass_fields__ if k != "kind"}
    return ShareLink(**fields, kind=Kind(m["kind"]))


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
    c, f = t.checkpoints.c, t.fine_tunes.c
    created = now().replace(microsecond=0)  # the signature covers whole seconds
    link_id = secrets.token_hex(8)
    with svc.store.engine.begin() as conn:
        owned = conn.execute(
            sa.select(c.id, c.ft_id, c.step, t.archives.c.size)
            .select_from(
                t.checkpoints.join(t.fine_tunes, f.id == c.ft_id).outerjoin(
                    t.archives, t.archives.c.checkpoint_id == c.id
                )
            )
            .where(c.id == checkpoint_id, f.org_id == who.org_id, f.id == (ft_id or c.ft_id))
        ).first()
        if owned is None:
            raise CheckpointNotFound("no such checkpoint; the fine-tune page lists them")
        if owned.size is None:
            raise ArchiveNotReady(
                f"the archive of {owned.ft_id} step {owned.step} is still being built; "
                "share it once it is ready"
            )
        conn.execute(
            t.share_links.insert().values(
                id=link_id,
                org_id=who.org_id,
                checkpoint_id=checkpoint_id,
                created_by=who.key_id,
                created_at=created,
                expires_at=created + timedelta(seconds=seconds),
            )
        )
        link = _link(conn.execute(_select().where(t.share_links.c.id == link_id)).one()._mapping)
    return link, token(secret, link)


def open_link(svc: Services, secret: bytes, text: str) -> tuple[ShareLink, Resolved]:
    """What a share token downloads; refused if unknown, altered, expired or revoked."""
    link_id, _, signature = text.partition(".")
    with svc.store.engine.connect() as conn:
        row = conn.execute(_select().where(t.share_links.c.id == link_id[:32])).first()
    link = _link(row._mapping) if row else None
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
    s = t.share_links.c
    with svc.store.engine.begin() as conn:
        conn.execute(
            t.share_links.update()
            .where(s.id == link_id, s.org_id == who.org_id, s.revoked_at.is_(None))
            .values(revoked_at=now(), revoked_by=who.key_id)
        )
        row = conn.execute(_select().where(s.id == link_id, s.org_id == who.org_id)).first()
    return _link(row._mapping) if row else None


def list_links(svc: Services, org_id: str, *, ft_id: str | None = None) -> list[ShareLink]:
    """The organization's links, newest first (at most 200)."""
    s = t.share_links.c
    q = _select().where(s.org_id == org_id)
    if ft_id is not None:
        q = q.where(t.checkpoints.c.ft_id == ft_id)
    with svc.store.engine.connect() as conn:
        rows = conn.execute(q.order_by(s.created_at.desc(), s.id).limit(200))
        return [_link(r._mapping) for r in rows]
