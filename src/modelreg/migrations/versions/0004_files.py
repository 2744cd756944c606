"""files: the files of versions, the blobs they share, resumable upload sessions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 13:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: Naive UTC timestamps with microseconds everywhere (MySQL/MariaDB drop them by default).
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
#: JSON documents, as the models declare them.
JSON = sa.JSON(none_as_null=True)
TABLE = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("last_referenced_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_blobs")),
        **TABLE,
    )
    op.create_index("ix_blobs_last_referenced_at", "blobs", ["last_referenced_at"])

    op.create_table(
        "files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("media_type", sa.String(length=255), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(["sha256"], ["blobs.sha256"],
                                name=op.f("fk_files_sha256_blobs")),
        sa.ForeignKeyConstraint(["version_id"], ["versions.id"],
                                name=op.f("fk_files_version_id_versions"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
        sa.UniqueConstraint("version_id", "path", name="uq_files_version_id_path"),
        **TABLE,
    )
    op.create_index("ix_files_sha256", "files", ["sha256"])

    op.create_table(
        "upload_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("media_type", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("state", JSON, nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["versions.id"],
                                name=op.f("fk_upload_sessions_version_id_versions"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upload_sessions")),
        sa.UniqueConstraint("public_id", name=op.f("uq_upload_sessions_public_id")),
        **TABLE,
    )
    op.create_index("ix_upload_sessions_expires_at", "upload_sessions", ["expires_at"])
    op.create_index("ix_upload_sessions_version_id", "upload_sessions", ["version_id"])


def downgrade() -> None:
    op.drop_table("upload_sessions")
    op.drop_table("files")
    op.drop_table("blobs")
