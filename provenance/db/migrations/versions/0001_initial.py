"""Records and signing keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "records",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("cid", sa.String(128), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("source_type", sa.String(64), nullable=False),
        sa.Column("watermark_id", sa.BigInteger(), nullable=True),
        sa.Column("watermarked", sa.Boolean(), nullable=False),
        sa.Column("watermark_note", sa.Text(), nullable=True),
        sa.Column("manifest_label", sa.String(128), nullable=True),
        sa.Column("original_filename", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("chain_id", sa.BigInteger(), nullable=True),
        sa.Column("registry_address", sa.String(42), nullable=True),
        sa.Column("chain_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_records_sha256", "records", ["sha256"], unique=True)
    op.create_index("ix_records_watermark_id", "records", ["watermark_id"], unique=True)
    op.create_index("ix_records_key_id", "records", ["key_id"])
    op.create_index("ix_records_status", "records", ["status"])
    op.create_table(
        "signing_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.drop_table("records")
