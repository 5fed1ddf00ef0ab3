"""Storage policy: a per-organization quota on source bytes, and retention of
intermediate checkpoints per organization, overridable per fine-tune (NULL: no rule for
an organization, the organization's rule for a fine-tune; -1 on a fine-tune: no rule).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("source_quota_bytes", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("retention_keep_last", sa.Integer, nullable=True))
        batch.add_column(sa.Column("retention_max_age_days", sa.Integer, nullable=True))
    with op.batch_alter_table("fine_tunes") as batch:
        batch.add_column(sa.Column("retention_keep_last", sa.Integer, nullable=True))
        batch.add_column(sa.Column("retention_max_age_days", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fine_tunes") as batch:
        batch.drop_column("retention_max_age_days")
        batch.drop_column("retention_keep_last")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("retention_max_age_days")
        batch.drop_column("retention_keep_last")
        batch.drop_column("source_quota_bytes")
