"""MetadataStore: every read and write of metadata, one implementation for SQLite and PostgreSQL.

Methods are synchronous (SQLAlchemy Core); the async server calls them in a thread.
Every fine-tune lookup takes the caller's organization: another organization's rows are
indistinguishable from missing ones.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

from tunevault.metadata import tables as t
from tunevault.models import (
    ApiKey,
    Archive,
    Checkpoint,
    Event,
    FileEntry,
    FineTune,
    Kind,
    MetricRow,
    Organization,
    Principal,
    Scope,
)

_TOKEN = re.compile(r"^tv_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")


def now() -> datetime:
    return datetime.now(UTC)


def _hash_secret(secret: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class MetadataStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        cfg = Config()
        cfg.set_main_option(
            "script_location", str(resources.files("tunevault.metadata") / "migrations")
        )
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # Organizations and keys -----------------------------------------------------------

    def create_org(self, name: str) -> Organization:
        org = Organization(id=f"org-{uuid.uuid4().hex[:16]}", name=name, created_at=now())
        with self.engine.begin() as conn:
            conn.execute(t.organizations.insert().values(**org.__dict__))
        return org

    def get_org_by_name(self, name: str) -> Organization | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.organizations).where(t.organizations.c.name == name)
            ).first()
        return Organization(**row._mapping) if row else None

    def list_orgs(self) -> list[Organization]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.organizations).order_by(t.organizations.c.name))
            return [Organization(**r._mapping) for r in rows]

    def create_key(self, org_id: str, name: str, scopes: Iterable[Scope]) -> tuple[ApiKey, str]:
        """Create a key; the returned token is shown once and never stored."""
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        scope_set = frozenset(Scope(s) for s in scopes)
        key = ApiKey(
            id=key_id,
            org_id=org_id,
            name=name,
            scopes=scope_set,
            created_at=now(),
            revoked_at=None,
        )
        with self.engine.begin() as conn:
            conn.execute(
                t.api_keys.insert().values(
                    id=key_id,
                    org_id=org_id,
                    name=name,
                    secret_sha256=_hash_secret(secret),
                    scopes=",".join(sorted(scope_set)),
                    created_at=key.created_at,
                )
            )
        return key, f"tv_{key_id}_{secret}"

    def list_keys(self, org_id: str | None = None) -> list[ApiKey]:
        q = sa.select(t.api_keys).order_by(t.api_keys.c.created_at)
        if org_id is not None:
            q = q.where(t.api_keys.c.org_id == org_id)
        with self.engine.connect() as conn:
            return [_key(r._mapping) for r in conn.execute(q)]

    def revoke_key(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                t.api_keys.update()
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
        return res.rowcount > 0

    def authenticate(self, token: str) -> Principal | None:
        """The principal behind a bearer token, or None for a bad, unknown or revoked key."""
        m = _TOKEN.match(token)
        if not m:
            return None
        key_id, secret = m.groups()
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.api_keys, t.organizations.c.name.label("org_name"))
                .join(t.organizations, t.organizations.c.id == t.api_keys.c.org_id)
                .where(t.api_keys.c.id == key_id)
            ).first()
        expected = row.secret_sha256 if row else _hash_secret("")
        ok = hmac.compare_digest(expected, _hash_secret(secret))
        if row is None or not ok or row.revoked_at is not None:
            return None
        return Principal(
            key_id=row.id,
            key_name=row.name,
            org_id=row.org_id,
            org_name=row.org_name,
            scopes=_scopes(row.scopes),
        )

    # Fine-tunes -------------------------------------------------------------------------

    def create_fine_tune(
        self,
        org_id: str,
        *,
        model: str,
        model_output_name: str,
        training_type: str,
        suffix: str | None = None,
        status: str = "pending",
        lora_r: int | None = None,
        lora_alpha: int | None = None,
        lora_dropout: float | None = None,
        lora_trainable_modules: str | None = None,
    ) -> FineTune:
        ts = now()
        ft = FineTune(
            id=f"ft-{uuid.uuid4()}",
            org_id=org_id,
            model=model,
            model_output_name=model_output_name,
            suffix=suffix,
            status=status,
            training_type=training_type,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_trainable_modules=lora_trainable_modules,
            created_at=ts,
            updated_at=ts,
        )
        with self.engine.begin() as conn:
            conn.execute(t.fine_tunes.insert().values(**ft.__dict__))
        return ft

    def get_fine_tune(self, org_id: str, ft_id: str) -> FineTune | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.fine_tunes).where(
                    t.fine_tunes.c.id == ft_id, t.fine_tunes.c.org_id == org_id
                )
            ).first()
        return FineTune(**row._mapping) if row else None

    def list_fine_tunes(self, org_id: str) -> list[FineTune]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.fine_tunes)
                .where(t.fine_tunes.c.org_id == org_id)
                .order_by(t.fine_tunes.c.created_at, t.fine_tunes.c.id)
            )
            return [FineTune(**r._mapping) for r in rows]

    def set_status(self, org_id: str, ft_id: str, status: str) -> FineTune | None:
        with self.engine.begin() as conn:
            conn.execute(
                t.fine_tunes.update()
                .where(t.fine_tunes.c.id == ft_id, t.fine_tunes.c.org_id == org_id)
                .values(status=status, updated_at=now())
            )
        return self.get_fine_tune(org_id, ft_id)

    def delete_fine_tune(self, org_id: str, ft_id: str) -> bool:
        """Delete the fine-tune and everything that hangs off it (blobs are left to gc)."""
        with self.engine.begin() as conn:
            ckpt_ids = sa.select(t.checkpoints.c.id).where(t.checkpoints.c.ft_id == ft_id)
            owned = conn.execute(
                sa.select(t.fine_tunes.c.id).where(
                    t.fine_tunes.c.id == ft_id, t.fine_tunes.c.org_id == org_id
                )
            ).first()
            if owned is None:
                return False
            # Explicit child deletes: SQLite only cascades with foreign_keys=ON per connection.
            conn.execute(t.archives.delete().where(t.archives.c.checkpoint_id.in_(ckpt_ids)))
            conn.execute(
                t.checkpoint_files.delete().where(t.checkpoint_files.c.checkpoint_id.in_(ckpt_ids))
            )
            for table in (t.checkpoints, t.events, t.metrics):
                conn.execute(table.delete().where(table.c.ft_id == ft_id))
            conn.execute(t.fine_tunes.delete().where(t.fine_tunes.c.id == ft_id))
        return True

    # Events and metrics -------------------------------------------------------------------

    def add_event(
        self, ft_id: str, type_: str, message: str, level: str = "info", step: int | None = None
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                t.events.insert().values(
                    ft_id=ft_id,
                    created_at=now(),
                    level=level,
                    type=type_.upper(),
                    message=message,
                    step=step,
                )
            )

    def list_events(self, ft_id: str) -> list[Event]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.events).where(t.events.c.ft_id == ft_id).order_by(t.events.c.id)
            )
            return [
                Event(
                    created_at=r.created_at,
                    level=r.level,
                    type=r.type,
                    message=r.message,
                    step=r.step,
                )
                for r in rows
            ]

    def add_metrics(self, ft_id: str, rows: Sequence[MetricRow]) -> None:
        if not rows:
            return
        with self.engine.begin() as conn:
            conn.execute(
                t.metrics.insert(),
                [{"ft_id": ft_id, "step": r.step, "data": r.values} for r in rows],
            )

    def list_metrics(self, ft_id: str) -> list[MetricRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.metrics)
                .where(t.metrics.c.ft_id == ft_id)
                .order_by(t.metrics.c.step, t.metrics.c.id)
            )
            return [MetricRow(step=r.step, values=dict(r.data)) for r in rows]

    # Checkpoints and archives ---------------------------------------------------------------

    def add_checkpoint(
        self, ft_id: str, step: int, kind: Kind, final: bool, files: Sequence[FileEntry]
    ) -> Checkpoint:
        ts = now()
        with self.engine.begin() as conn:
            res = conn.execute(
                t.checkpoints.insert().values(
                    ft_id=ft_id, step=step, kind=kind.value, final=final, created_at=ts
                )
            )
            assert res.inserted_primary_key is not None
            ckpt_id = res.inserted_primary_key[0]
            if files:
                conn.execute(
                    t.checkpoint_files.insert(),
                    [
                        {
                            "checkpoint_id": ckpt_id,
                            "path": f.path,
                            "size": f.size,
                            "sha256": f.sha256,
                        }
                        for f in files
                    ],
                )
        return Checkpoint(
            id=int(ckpt_id),
            ft_id=ft_id,
            step=step,
            kind=kind,
            final=final,
            created_at=ts,
            files=tuple(sorted(files, key=lambda f: f.path)),
        )

    def list_checkpoints(self, ft_id: str) -> list[Checkpoint]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.checkpoints)
                .where(t.checkpoints.c.ft_id == ft_id)
                .order_by(t.checkpoints.c.step, t.checkpoints.c.kind)
            )
            return [_checkpoint(r._mapping) for r in rows]

    def checkpoint_files(self, checkpoint_id: int) -> tuple[FileEntry, ...]:
        with self.engine.connect() as conn:
            return _files(conn, checkpoint_id)

    def get_checkpoint(self, checkpoint_id: int) -> Checkpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.checkpoints).where(t.checkpoints.c.id == checkpoint_id)
            ).first()
            if row is None:
                return None
            return _checkpoint(row._mapping, _files(conn, checkpoint_id))

    def set_archive(self, checkpoint_id: int, storage_key: str, sha256: str, size: int) -> Archive:
        archive = Archive(
            checkpoint_id=checkpoint_id,
            storage_key=storage_key,
            sha256=sha256,
            size=size,
            created_at=now(),
        )
        with self.engine.begin() as conn:
            conn.execute(t.archives.delete().where(t.archives.c.checkpoint_id == checkpoint_id))
            conn.execute(t.archives.insert().values(**archive.__dict__))
        return archive

    def get_archive(self, checkpoint_id: int) -> Archive | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.archives).where(t.archives.c.checkpoint_id == checkpoint_id)
            ).first()
        return Archive(**row._mapping) if row else None

    def record_blob(self, sha256: str, size: int) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(t.blobs.c.sha256).where(t.blobs.c.sha256 == sha256)
            ).first()
            if not exists:
                conn.execute(t.blobs.insert().values(sha256=sha256, size=size, created_at=now()))


def _scopes(text: str) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in text.split(",") if s)


def _key(m: Any) -> ApiKey:
    return ApiKey(
        id=m["id"],
        org_id=m["org_id"],
        name=m["name"],
        scopes=_scopes(m["scopes"]),
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )


def _files(conn: Connection, checkpoint_id: int) -> tuple[FileEntry, ...]:
    rows = conn.execute(
        sa.select(t.checkpoint_files)
        .where(t.checkpoint_files.c.checkpoint_id == checkpoint_id)
        .order_by(t.checkpoint_files.c.path)
    )
    return tuple(FileEntry(path=r.path, size=r.size, sha256=r.sha256) for r in rows)


def _checkpoint(m: Any, files: tuple[FileEntry, ...] = ()) -> Checkpoint:
    return Checkpoint(
        id=m["id"],
        ft_id=m["ft_id"],
        step=m["step"],
        kind=Kind(m["kind"]),
        final=m["final"],
        created_at=m["created_at"],
        files=files,
    )
