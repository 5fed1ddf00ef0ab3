"""API key expiry: a key with an `expires_at` is refused from that moment (NULL: never).
And the log of operator actions across organizations (`tunevault admin delete`), and an
index that lets `tunevault audit prune` find old audit rows without a scan per batch.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

from tunevault.metadata.tables import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", UTCDateTime, nullable=True))
    op.create_table(
        "operator_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
    )
    op.create_index("ix_audit_downloads_created", "audit_downloads", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_audit_downloads_created", "audit_downloads")
    op.drop_table("operator_actions")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
