"""Publishing: per-organization blob ownership, base models, the build job queue.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from tunevault.metadata.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "org_blobs",
        sa.Column("org_id", sa.String(64), sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "base_models",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("org_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("org_id", "name", name="uq_base_model"),
    )
    op.create_table(
        "base_model_files",
        sa.Column(
            "base_model_id",
            sa.Integer,
            sa.ForeignKey("base_models.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("path", sa.String(1000), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
    )
    op.create_table(
        "build_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "checkpoint_id",
            sa.Integer,
            sa.ForeignKey("checkpoints.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime, nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("checkpoint_id", "kind", name="uq_build_job"),
    )
    op.create_index("ix_build_jobs_state", "build_jobs", ["state", "id"])


def downgrade() -> None:
    op.drop_index("ix_build_jobs_state", "build_jobs")
    for name in ("build_jobs", "base_model_files", "base_models", "org_blobs"):
        op.drop_table(name)
