"""Lineage: datasets and their items, registered models, training runs (``provenance.db.lineage``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _on_chain() -> list[sa.Column]:
    return [
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("registry_key", sa.String(66), nullable=True),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("chain_id", sa.BigInteger(), nullable=True),
        sa.Column("registry_address", sa.String(42), nullable=True),
        sa.Column("chain_error", sa.Text(), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("root", sa.String(66), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("manifest_cid", sa.String(128), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("license", sa.String(128), nullable=True),
        sa.Column("creators", sa.JSON(), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        *_on_chain(),
    )
    op.create_index("ix_datasets_root", "datasets", ["root"])
    op.create_index("ix_datasets_status", "datasets", ["status"])
    op.create_index("ix_datasets_account_id", "datasets", ["account_id"])
    op.create_table(
        "dataset_items",
        sa.Column("dataset_id", sa.String(32), sa.ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("cid", sa.String(128), nullable=True),
        sa.Column("caption", sa.Text(), nullable=True),
        sa.Column("caption_sha256", sa.String(64), nullable=True),
        sa.Column("license", sa.String(128), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("iscc", sa.String(64), nullable=True),
    )
    op.create_index("ix_dataset_items_sha256", "dataset_items", ["sha256"])
    op.create_table(
        "registered_models",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("signature_cid", sa.String(128), nullable=True),
        sa.Column("architecture", sa.String(128), nullable=True),
        sa.Column("base_model_id", sa.String(32), nullable=True),
        sa.Column("dataset_id", sa.String(32), nullable=True),
        sa.Column("training_id", sa.String(32), nullable=True),
        sa.Column("creators", sa.JSON(), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        *_on_chain(),
    )
    op.create_index("ix_registered_models_name", "registered_models", ["name"])
    op.create_index("ix_registered_models_digest", "registered_models", ["digest"], unique=True)
    op.create_index("ix_registered_models_status", "registered_models", ["status"])
    op.create_index("ix_registered_models_account_id", "registered_models", ["account_id"])
    op.create_table(
        "training_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dataset_id", sa.String(32), nullable=False),
        sa.Column("base_model", sa.Text(), nullable=False),
        sa.Column("base_digest", sa.String(64), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("output_path", sa.Text(), nullable=True),
        sa.Column("model_id", sa.String(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("account_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_training_runs_status", "training_runs", ["status"])
    op.create_index("ix_training_runs_dataset_id", "training_runs", ["dataset_id"])
    op.create_index("ix_training_runs_account_id", "training_runs", ["account_id"])


def downgrade() -> None:
    op.drop_table("training_runs")
    op.drop_table("registered_models")
    op.drop_table("dataset_items")
    op.drop_table("datasets")
