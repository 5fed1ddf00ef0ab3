"""MetadataStore: every read and write of metadata, one implementation for SQLite and PostgreSQL.

Methods are synchronous (SQLAlchemy Core); the async server calls them in a thread.
Every fine-tune lookup takes the caller's organization: another organization's rows are
indistinguishable from missing ones. The methods live in one mixin per subject.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from tunevault.metadata.accounts import AccountsMixin
from tunevault.metadata.audit import AuditMixin
from tunevault.metadata.blobs import BlobsMixin
from tunevault.metadata.checkpoints import CheckpointsMixin
from tunevault.metadata.collection import GcMixin
from tunevault.metadata.finetunes import FineTunesMixin
from tunevault.metadata.jobs import JobsMixin


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")  # off by default: deletes rely on CASCADE
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class MetadataStore(
    AccountsMixin, FineTunesMixin, CheckpointsMixin, BlobsMixin, JobsMixin, AuditMixin, GcMixin
):
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
