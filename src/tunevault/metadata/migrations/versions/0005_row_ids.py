"""Events and metrics: the publisher's id per row, so that a retried batch adds nothing twice.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("events", "metrics"):
        op.add_column(table, sa.Column("client_id", sa.String(100), nullable=True))
        # Rows without an id (NULL) never conflict, in SQLite and PostgreSQL alike.
        op.create_index(f"ux_{table}_client_id", table, ["ft_id", "client_id"], unique=True)


def downgrade() -> None:
    for table in ("events", "metrics"):
        op.drop_index(f"ux_{table}_client_id", table)
        op.drop_column(table, "client_id")
