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
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from tunevault.errors import SchemaOutdated
from tunevault.metadata.accounts import AccountsMixin
from tunevault.metadata.admin import AdminMixin
from tunevault.metadata.audit import AuditMixin, AuditPruneMixin
from tunevault.metadata.blobs import BlobsMixin
from tunevault.metadata.buildqueue import BuildQueueMixin
from tunevault.metadata.cache import CacheMixin
from tunevault.metadata.checkpoints import CheckpointsMixin
from tunevault.metadata.collection import GcMixin
from tunevault.metadata.finetunes import FineTunesMixin
from tunevault.metadata.jobs import JobsMixin
from tunevault.metadata.notify import JobSignal
from tunevault.metadata.policy import PolicyMixin
from tunevault.metadata.sessions import SessionsMixin
from tunevault.metadata.shares import SharesMixin
from tunevault.metadata.timing import Observer, time_statements

# The PostgreSQL advisory lock every migrating process takes ("tvmi"): processes started
# together on an empty database migrate one after another, the later ones finding nothing
# to do. Without it two raced CREATE TABLE into UniqueViolation pg_type_typname_nsp_index.
MIGRATION_LOCK = 0x74766D69


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option(
        "script_location", str(resources.files("tunevault.metadata") / "migrations")
    )
    return cfg


def _revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


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
    AccountsMixin,
    FineTunesMixin,
    CheckpointsMixin,
    BlobsMixin,
    JobsMixin,
    BuildQueueMixin,
    AuditMixin,
    GcMixin,
    PolicyMixin,
    SessionsMixin,
    SharesMixin,
    AdminMixin,
    AuditPruneMixin,
    CacheMixin,
):
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.jobs_signal = JobSignal()

    def time_statements(self, observe: Observer) -> None:
        """Report `(kind, seconds)` for every statement from now on (metadata/timing.py)."""
        time_statements(self.engine, observe)

    def migrate(self) -> tuple[str | None, str | None]:
        """Bring the schema to the newest Alembic revision (idempotent); the revisions
        before and after. On PostgreSQL under MIGRATION_LOCK, on SQLite under its write
        lock, both held to the commit."""
        cfg = _alembic_config()
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            elif conn.dialect.name == "sqlite":  # the write lock up front, for the same reason
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            before = _revision(conn)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            return before, _revision(conn)

    def check_schema(self) -> None:
        """Refuse a schema other than the newest revision, naming the fix."""
        with self.engine.connect() as conn:
            current = _revision(conn)
        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
        if current != head:
            raise SchemaOutdated(
                f"the database schema is at revision {current or 'none (an empty database)'}, "
                f"this tunevault needs {head}: run `tunevault migrate` first "
                "(or set TUNEVAULT_AUTO_MIGRATE=true to migrate at every start)"
            )

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
