"""Accounts and API keys; the account behind every record, job, mint and voucher.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column(
            "account_id", sa.String(32), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("rate_per_min", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"])
    # Existing rows keep account_id NULL: they were certified before accounts existed (admin keys see them).
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("account_id", sa.String(32), nullable=True))
        batch.create_index("ix_records_account_id_created_at", ["account_id", "created_at"])
    with op.batch_alter_table("generation_jobs") as batch:
        batch.add_column(sa.Column("account_id", sa.String(32), nullable=True))
        batch.create_index("ix_generation_jobs_account_id", ["account_id"])
    for table in ("nft_tokens", "nft_vouchers"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("account_id", sa.String(32), nullable=True))


def downgrade() -> None:
    for table in ("nft_vouchers", "nft_tokens"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("account_id")
    with op.batch_alter_table("generation_jobs") as batch:
        batch.drop_index("ix_generation_jobs_account_id")
        batch.drop_column("account_id")
    with op.batch_alter_table("records") as batch:
        batch.drop_index("ix_records_account_id_created_at")
        batch.drop_column("account_id")
    op.drop_table("api_keys")
    op.drop_table("accounts")
