"""The web console: sign-in sessions and share links.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from tunevault.metadata.tables import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        sa.Column(
            "key_id",
            sa.String(64),
            sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_console_sessions_key", "console_sessions", ["key_id"])
    op.create_table(
        "share_links",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("org_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column(
            "checkpoint_id",
            sa.Integer,
            sa.ForeignKey("checkpoints.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
        sa.Column("revoked_by", sa.String(64), nullable=True),
    )
    op.create_index("ix_share_links_org", "share_links", ["org_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_share_links_org", "share_links")
    op.drop_table("share_links")
    op.drop_index("ix_console_sessions_key", "console_sessions")
    op.drop_table("console_sessions")
