"""direct uploads: upload sessions whose parts go straight to the blob store

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 06:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("upload_sessions") as batch:
        batch.add_column(sa.Column("direct", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("status", sa.String(length=16), nullable=False,
                                   server_default="open"))
        batch.add_column(sa.Column("error", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("upload_sessions") as batch:
        batch.drop_column("error")
        batch.drop_column("status")
        batch.drop_column("direct")
