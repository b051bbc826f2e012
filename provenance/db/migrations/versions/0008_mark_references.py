"""The luminance mark's stored references.

Records certified from here on carry a second mark component in luminance, read against a per-record
reference the service keeps (``provenance.marks.luma``): the unmarked picture's cell values and the mark's
strength per cell. Secret, so in a table of its own that only the mark confirmation reads. Records
made earlier have no row: their mark is read from chroma alone, as before. ``ix_records_size``: verify's blind
read tries a rescaling only when it gives back the size of some marked record.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mark_references",
        sa.Column("record_id", sa.String(32), sa.ForeignKey("records.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    # verify's blind read asks which sizes marked records have
    op.create_index("ix_records_size", "records", ["width", "height"])


def downgrade() -> None:
    op.drop_index("ix_records_size", table_name="records")
    op.drop_table("mark_references")
