"""Indexes on sha256 of file and ownership rows: gc looks blobs up by digest under its lock.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("checkpoint_files", "base_model_files", "org_blobs")


def upgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_sha256", table, ["sha256"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_sha256", table)
