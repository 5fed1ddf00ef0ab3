"""Blobs: the xxh3-128 recorded with a verified upload, which archive builds re-check.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("blobs", sa.Column("xxh3", sa.String(32), nullable=True))


def downgrade() -> None:
    op.drop_column("blobs", "xxh3")
