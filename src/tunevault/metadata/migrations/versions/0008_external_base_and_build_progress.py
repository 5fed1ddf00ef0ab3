"""Fine-tunes whose base lives elsewhere (no merge); build jobs' start time and progress.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from tunevault.metadata.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "fine_tunes",
        sa.Column("external_base", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.add_column("build_jobs", sa.Column("started_at", UTCDateTime, nullable=True))
    op.add_column("build_jobs", sa.Column("progress_done", sa.BigInteger, nullable=True))
    op.add_column("build_jobs", sa.Column("progress_total", sa.BigInteger, nullable=True))


def downgrade() -> None:
    for column in ("progress_total", "progress_done", "started_at"):
        op.drop_column("build_jobs", column)
    op.drop_column("fine_tunes", "external_base")
