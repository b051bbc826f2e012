"""Perceptual fingerprints of records (the ISCC image code and patch codes), one row per record.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_fingerprints",
        # Grows monotonically: index instances sync the rows after the last id they saw.
        # BIGINT on PostgreSQL; SQLite only autoincrements an INTEGER primary key.
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column(
            "record_id",
            sa.String(32),
            sa.ForeignKey("records.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("iscc", sa.String(64), nullable=False),
        sa.Column("scheme", sa.String(32), nullable=False),
        sa.Column("codes", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_record_fingerprints_iscc", "record_fingerprints", ["iscc"])


def downgrade() -> None:
    op.drop_index("ix_record_fingerprints_iscc", table_name="record_fingerprints")
    op.drop_table("record_fingerprints")
