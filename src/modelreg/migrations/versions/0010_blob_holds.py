"""blob holds: blobs a plugin keeps from garbage collection without a version

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 01:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
TABLE = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "blob_holds",
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["sha256"], ["blobs.sha256"],
                                name=op.f("fk_blob_holds_sha256_blobs")),
        sa.PrimaryKeyConstraint("owner", "key", name=op.f("pk_blob_holds")),
        **TABLE,
    )
    op.create_index("ix_blob_holds_sha256", "blob_holds", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_blob_holds_sha256", table_name="blob_holds")
    op.drop_table("blob_holds")
