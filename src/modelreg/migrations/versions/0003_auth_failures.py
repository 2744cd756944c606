"""auth_failures: failed authentications per client, for throttling

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 13:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: Naive UTC timestamps with microseconds everywhere (MySQL/MariaDB drop them by default).
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "auth_failures",
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", TIMESTAMP, nullable=False),
        sa.Column("blocked_until", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("client", name=op.f("pk_auth_failures")),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )


def downgrade() -> None:
    op.drop_table("auth_failures")
