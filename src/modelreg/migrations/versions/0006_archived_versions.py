"""archived versions: the file list an archived version keeps once its files are dropped

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: JSON documents, as the models declare them.
JSON = sa.JSON(none_as_null=True)


def upgrade() -> None:
    # The status column is a free string of 16 characters: "archived" needs no change there.
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("archived_files", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.drop_column("archived_files")
