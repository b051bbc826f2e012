"""Merkle-batched anchoring and NFTs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("batch_root", sa.String(66), nullable=True))
        batch.add_column(sa.Column("merkle_proof", sa.JSON(), nullable=True))
        batch.create_index("ix_records_batch_root", ["batch_root"])
    op.create_table(
        "anchor_batches",
        sa.Column("root", sa.String(66), primary_key=True),
        sa.Column("leaves_cid", sa.String(128), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("chain_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_anchor_batches_status", "anchor_batches", ["status"])
    op.create_table(
        "nft_tokens",
        sa.Column("token_id", sa.String(66), primary_key=True),
        sa.Column("record_id", sa.String(32), nullable=False, unique=True),
        sa.Column("owner", sa.String(42), nullable=False),
        sa.Column("metadata_cid", sa.String(128), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("minted_via", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "nft_vouchers",
        sa.Column("nonce", sa.String(78), primary_key=True),
        sa.Column("record_id", sa.String(32), nullable=False, index=True),
        sa.Column("to", sa.String(42), nullable=False),
        sa.Column("expiry", sa.BigInteger(), nullable=False),
        sa.Column("metadata_cid", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nft_vouchers")
    op.drop_table("nft_tokens")
    op.drop_table("anchor_batches")
    with op.batch_alter_table("records") as batch:
        batch.drop_index("ix_records_batch_root")
        batch.drop_column("merkle_proof")
        batch.drop_column("batch_root")
