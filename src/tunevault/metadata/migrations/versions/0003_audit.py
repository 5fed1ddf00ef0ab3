"""Audit: one row per download answered (who, what, when, how many bytes).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from tunevault.metadata.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_downloads",
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
    )
    op.create_index("ix_audit_downloads_org", "audit_downloads", ["org_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_downloads_org", "audit_downloads")
    op.drop_table("audit_downloads")
