"""Records are looked up by their manifest id (``GET /c2pa/sbr/v1/manifests/{id}``): index ``manifest_label``.

Certify fills it from now on; records made earlier get it the first time the soft-binding API resolves them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_records_manifest_label", "records", ["manifest_label"])


def downgrade() -> None:
    op.drop_index("ix_records_manifest_label", table_name="records")
