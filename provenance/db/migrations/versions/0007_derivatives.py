"""Declared derivatives and unstated source types.

A record may name the record it was derived from (``derived_from``): certify refuses content that
belongs to another account's record unless the caller declares it a derivative, and verify then
names the original's account as the origin. ``source_type`` becomes nullable: an upload is signed
with no digital-source-type claim unless the caller states one. ``mark_layout`` says which block layout a
record's mark was embedded with: 1 (the library's) for every mark made before keyed layouts, 2 after.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("derived_from", sa.String(32), nullable=True))
        batch.alter_column("source_type", existing_type=sa.String(64), nullable=True)
        batch.add_column(sa.Column("certify_note", sa.Text(), nullable=True))
        batch.create_index("ix_records_derived_from", ["derived_from"])
        batch.add_column(sa.Column("mark_layout", sa.Integer(), nullable=True))
    op.execute("UPDATE records SET mark_layout = 1 WHERE watermark_id IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.drop_column("mark_layout")
        batch.drop_index("ix_records_derived_from")
        batch.drop_column("certify_note")
        batch.drop_column("derived_from")
        batch.alter_column("source_type", existing_type=sa.String(64), nullable=False)
