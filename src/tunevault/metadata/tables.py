"""The schema, in SQLAlchemy Core. Alembic migrations (migrations/versions) create it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        ts: datetime = value
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


metadata = sa.MetaData()

organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # 0011: storage policy (tunevault.service.usage, tunevault.service.retention)
    sa.Column("source_quota_bytes", sa.BigInteger, nullable=True),
    sa.Column("retention_keep_last", sa.Integer, nullable=True),
    sa.Column("retention_max_age_days", sa.Integer, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("org_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("scopes", sa.String(100), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    # 0010: per-key limits; NULL means the server's default
    sa.Column("requests_per_minute", sa.Integer, nullable=True),
    sa.Column("max_downloads", sa.Integer, nullable=True),
    # 0012: refused from this moment on; NULL never expires
    sa.Column("expires_at", UTCDateTime, nullable=True),
)

fine_tunes = sa.Table(
    "fine_tunes",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("org_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("model", sa.String(300), nullable=False),
    sa.Column("model_output_name", sa.String(300), nullable=False),
    sa.Column("suffix", sa.String(100), nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("training_type", sa.String(16), nullable=False),
    sa.Column("lora_r", sa.Integer, nullable=True),
    sa.Column("lora_alpha", sa.Integer, nullable=True),
    sa.Column("lora_dropout", sa.Float, nullable=True),
    sa.Column("lora_trainable_modules", sa.String(500), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("idempotency_key", sa.String(100), nullable=True),  # 0006
    sa.Column("external_base", sa.Boolean, nullable=False, server_default=sa.false()),  # 0008
    sa.Column("retention_keep_last", sa.Integer, nullable=True),  # 0011: NULL: the org's
    sa.Column("retention_max_age_days", sa.Integer, nullable=True),  # 0011: -1: no rule
    sa.Index("ix_fine_tunes_org", "org_id", "created_at"),
    sa.Index("ux_fine_tunes_idempotency_key", "org_id", "idempotency_key", unique=True),  # 0006
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "ft_id", sa.String(64), sa.ForeignKey("fine_tunes.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("step", sa.Integer, nullable=True),
    sa.Column("client_id", sa.String(100), nullable=True),  # 0005
    sa.Index("ix_events_ft", "ft_id", "id"),
    sa.Index("ux_events_client_id", "ft_id", "client_id", unique=True),  # 0005
)

metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "ft_id", sa.String(64), sa.ForeignKey("fine_tunes.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("client_id", sa.String(100), nullable=True),  # 0005
    sa.Index("ix_metrics_ft", "ft_id", "step"),
    sa.Index("ux_metrics_client_id", "ft_id", "client_id", unique=True),  # 0005
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "ft_id", sa.String(64), sa.ForeignKey("fine_tunes.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("final", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("ft_id", "step", "kind", name="uq_checkpoint"),
)

checkpoint_files = sa.Table(
    "checkpoint_files",
    metadata,
    sa.Column(
        "checkpoint_id",
        sa.Integer,
        sa.ForeignKey("checkpoints.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("path", sa.String(1000), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Index("ix_checkpoint_files_sha256", "sha256"),  # 0007
)

archives = sa.Table(
    "archives",
    metadata,
    sa.Column(
        "checkpoint_id",
        sa.Integer,
        sa.ForeignKey("checkpoints.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("storage_key", sa.String(300), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # 0013: the last download began or ended (the audit writer's batches); NULL: none yet
    sa.Column("last_download_at", UTCDateTime, nullable=True),
    # 0014: tunevault.models.ArchiveFormat; rows from before it are all SUMS_FIRST
    sa.Column("format", sa.String(32), nullable=False, server_default="tv-archive-1"),
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # 0004: recorded with a verified upload; NULL for blobs stored before
    # (tunevault.archive.checksums)
    sa.Column("xxh3", sa.String(32), nullable=True),
)

# 0002: publishing ------------------------------------------------------------------------

org_blobs = sa.Table(
    "org_blobs",
    metadata,
    sa.Column("org_id", sa.String(64), sa.ForeignKey("organizations.id"), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_org_blobs_sha256", "sha256"),  # 0007: the primary key leads with org_id
)

base_models = sa.Table(
    "base_models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("org_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("org_id", "name", name="uq_base_model"),
)

base_model_files = sa.Table(
    "base_model_files",
    metadata,
    sa.Column(
        "base_model_id",
        sa.Integer,
        sa.ForeignKey("base_models.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("path", sa.String(1000), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Index("ix_base_model_files_sha256", "sha256"),  # 0007
)

build_jobs = sa.Table(
    "build_jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "checkpoint_id",
        sa.Integer,
        sa.ForeignKey("checkpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("kind", sa.String(16), nullable=False),  # "archive" or "merge"
    sa.Column("state", sa.String(16), nullable=False),  # queued, running, done, failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.String(100), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),  # 0008: claimed at
    sa.Column("progress_done", sa.BigInteger, nullable=True),  # 0008: bytes built so far
    sa.Column("progress_total", sa.BigInteger, nullable=True),  # 0008: of this many
    sa.UniqueConstraint("checkpoint_id", "kind", name="uq_build_job"),
    sa.Index("ix_build_jobs_state", "state", "id"),
)

# 0003: audit ------------------------------------------------------------------------------

audit_downloads = sa.Table(
    "audit_downloads",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("org_id", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("ft_id", sa.String(64), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("archive_sha256", sa.String(64), nullable=False),
    sa.Column("range_start", sa.BigInteger, nullable=False),
    sa.Column("bytes_planned", sa.BigInteger, nullable=False),
    sa.Column("bytes_sent", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("client", sa.String(100), nullable=True),
    sa.Column("user_agent", sa.String(300), nullable=True),
    sa.Index("ix_audit_downloads_org", "org_id", "id"),
    sa.Index("ix_audit_downloads_created", "created_at"),  # 0012: pruning by age
)

# 0012: what operators did across organizations (`tunevault admin delete`) -------------

operator_actions = sa.Table(
    "operator_actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),  # the OS user who ran the command
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("org_id", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
)

# 0009: the web console -------------------------------------------------------------------

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id_sha256", sa.String(64), primary_key=True),  # the cookie holds the id itself
    sa.Column(
        "key_id", sa.String(64), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_console_sessions_key", "key_id"),
)

share_links = sa.Table(
    "share_links",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("org_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
    sa.Column(
        "checkpoint_id",
        sa.Integer,
        sa.ForeignKey("checkpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("created_by", sa.String(64), nullable=False),  # the key id
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("revoked_by", sa.String(64), nullable=True),
    sa.Index("ix_share_links_org", "org_id", "created_at"),
)

# 0013: derived data as a cache (tunevault.service.cache) ---------------------------------

evicted_archives = sa.Table(
    "evicted_archives",
    metadata,
    sa.Column(
        "checkpoint_id",
        sa.Integer,
        sa.ForeignKey("checkpoints.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # What the archive was: a rebuild must produce these bytes again.
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("evicted_at", UTCDateTime, nullable=False),
    # 0014: the format the rebuild must use to give the same bytes
    sa.Column("format", sa.String(32), nullable=False, server_default="tv-archive-1"),
)

pins = sa.Table(
    "pins",
    metadata,
    sa.Column(
        "ft_id", sa.String(64), sa.ForeignKey("fine_tunes.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("step", sa.Integer, primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
