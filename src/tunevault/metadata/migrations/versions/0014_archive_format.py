"""Each archive's format (tunevault.models.ArchiveFormat): where its `SHA256SUMS` sits, so
that an evicted archive is rebuilt to the same bytes. Every archive built before is
`tv-archive-1` (`SHA256SUMS` first).

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _column() -> sa.Column[str]:
    return sa.Column("format", sa.String(32), nullable=False, server_default="tv-archive-1")


def upgrade() -> None:
    for table in ("archives", "evicted_archives"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(_column())


def downgrade() -> None:
    for table in ("archives", "evicted_archives"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("format")
