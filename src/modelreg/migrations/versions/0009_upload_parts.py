"""upload parts: numbered parts of upload sessions, claimed before their bytes are written

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 00:30:00.000000

Sessions opened before this revision keep working: they are uploads in sequential chunks
(``part_size`` is ``NULL``).  Their chunks received so far were written with the blob
store's ``upload_chunk`` and are not parts, so the bytes they hold are forgotten: such a
session resumes at offset 0 (the client asks ``GET`` for the offset, as after any
interruption).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
JSON = sa.JSON(none_as_null=True)
TABLE = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.add_column("upload_sessions", sa.Column("part_size", sa.BigInteger(), nullable=True))
    op.add_column("upload_sessions", sa.Column("completing_until", TIMESTAMP, nullable=True))
    sessions = sa.table("upload_sessions", sa.column("offset", sa.BigInteger()))
    op.execute(sessions.update().values(offset=0))
    op.create_index("ix_upload_sessions_owner", "upload_sessions", ["owner"])
    op.create_table(
        "upload_parts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("state", JSON, nullable=True),
        sa.Column("claim", sa.String(length=32), nullable=False),
        sa.Column("claimed_until", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["upload_id"], ["upload_sessions.id"],
                                name=op.f("fk_upload_parts_upload_id_upload_sessions"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upload_parts")),
        sa.UniqueConstraint("upload_id", "number", name="uq_upload_parts_upload_id_number"),
        **TABLE,
    )


def downgrade() -> None:
    op.drop_table("upload_parts")
    op.drop_index("ix_upload_sessions_owner", table_name="upload_sessions")
    op.drop_column("upload_sessions", "completing_until")
    op.drop_column("upload_sessions", "part_size")
