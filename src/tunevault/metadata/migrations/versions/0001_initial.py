"""The first schema: organizations, keys, fine-tunes, events, metrics, checkpoints, archives.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from tunevault.metadata.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("org_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(100), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
    )
    op.create_table(
        "fine_tunes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("org_id", sa.String(64), sa.ForeignKey("organizations.id"), nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("model_output_name", sa.String(300), nullable=False),
        sa.Column("suffix", sa.String(100), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("training_type", sa.String(16), nullable=False),
        sa.Column("lora_r", sa.Integer, nullable=True),
        sa.Column("lora_alpha", sa.Integer, nullable=True),
        sa.Column("lora_dropout", sa.Float, nullable=True),
        sa.Column("lora_trainable_modules", sa.String(500), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_fine_tunes_org", "fine_tunes", ["org_id", "created_at"])
    fk_ft = sa.ForeignKey("fine_tunes.id", ondelete="CASCADE")
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ft_id", sa.String(64), fk_ft, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("step", sa.Integer, nullable=True),
    )
    op.create_index("ix_events_ft", "events", ["ft_id", "id"])
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "ft_id",
            sa.String(64),
            sa.ForeignKey("fine_tunes.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_metrics_ft", "metrics", ["ft_id", "step"])
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "ft_id",
            sa.String(64),
            sa.ForeignKey("fine_tunes.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("final", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("ft_id", "step", "kind", name="uq_checkpoint"),
    )
    fk_ckpt = sa.ForeignKey("checkpoints.id", ondelete="CASCADE")
    op.create_table(
        "checkpoint_files",
        sa.Column("checkpoint_id", sa.Integer, fk_ckpt, primary_key=True),
        sa.Column("path", sa.String(1000), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
    )
    op.create_table(
        "archives",
        sa.Column(
            "checkpoint_id",
            sa.Integer,
            sa.ForeignKey("checkpoints.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("storage_key", sa.String(300), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    for name in (
        "blobs",
        "archives",
        "checkpoint_files",
        "checkpoints",
        "metrics",
        "events",
        "fine_tunes",
        "api_keys",
        "organizations",
    ):
        op.drop_table(name)
