"""Fine-tunes: the Idempotency-Key they were created with, so a retried create makes one.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("fine_tunes", sa.Column("idempotency_key", sa.String(100), nullable=True))
    op.create_index(
        "ux_fine_tunes_idempotency_key", "fine_tunes", ["org_id", "idempotency_key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ux_fine_tunes_idempotency_key", "fine_tunes")
    op.drop_column("fine_tunes", "idempotency_key")
