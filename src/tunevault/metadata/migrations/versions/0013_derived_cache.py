"""Derived data as a cache: when each archive was last downloaded, what an evicted
archive was (its sha256, which its rebuild must match), and pinned steps.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

from tunevault.metadata.tables import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("archives") as batch:
        batch.add_column(sa.Column("last_download_at", UTCDateTime, nullable=True))
    op.create_table(
        "evicted_archives",
        sa.Column(
            "checkpoint_id",
            sa.Integer,
            sa.ForeignKey("checkpoints.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("evicted_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "pins",
        sa.Column(
            "ft_id",
            sa.String(64),
            sa.ForeignKey("fine_tunes.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("step", sa.Integer, primary_key=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pins")
    op.drop_table("evicted_archives")
    with op.batch_alter_table("archives") as batch:
        batch.drop_column("last_download_at")
